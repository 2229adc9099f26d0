"""`t_select` as the runner records it, against the same calls timed alone, on the default data space.

    python -m benchmarks.bench_select_in_runner [--budget 8] [--queries-per-domain 1]

For nn, hullft and sift_exact: one real job each (`run_job`, the embedded model and data space, outputs in a
temporary directory), then, for every query of the job, its candidates are retrieved again and the same
selection is timed alone (`timed_select` repeated, median of `--reps`). Prints the median over queries of both
and their ratio (the target in issue 9: <= 1.5), plus a check that the repeated selections have the recorded
number of distinct rows.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import pandas as pd

from hullft.compose import compose_config
from hullft.data import load_data_space
from hullft.embedder import Embedder
from hullft.models import load_model
from hullft.per_query import QueryRun
from hullft.runner import build_selector, pick_queries, run_job
from hullft.selection.timing import timed_select


def alone(cfg, space, loaded, embedder, queries: pd.DataFrame, reps: int) -> pd.DataFrame:
    """Per query: the selection at cfg.budget timed alone (the same call repeated) and its distinct count. The
    candidates come from the runner's own retrieval (QueryRun), which needs no engine or base scores."""
    selector, rows = build_selector(cfg.selector), []
    for query in queries.itertuples():
        run = QueryRun(query, cfg, space, loaded, embedder, selector, engine=None, base=None)
        timed_select(selector, run.q, run.candidates, cfg.budget)  # warm-up
        runs = [timed_select(selector, run.q, run.candidates, cfg.budget) for _ in range(reps)]
        rows.append({"query_id": query.doc_id, "alone": statistics.median(s for _, s in runs),
                     "distinct_alone": len(runs[0][0].indices)})
    return pd.DataFrame(rows)


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--budget", type=int, default=8)
    ap.add_argument("--queries-per-domain", type=int, default=1)
    ap.add_argument("--reps", type=int, default=21)
    args = ap.parse_args(argv)
    out, table = Path(tempfile.mkdtemp(prefix="bench-select-runner-")), []
    loaded = space = embedder = None
    for name in ("nn", "hullft", "sift_exact"):
        cfg = compose_config([f"selector={name}", f"budget={args.budget}",
                              f"queries_per_domain={args.queries_per_domain}", "logger=none"])
        records = run_job(cfg, out / name)
        if space is None:  # the same model and data space for every selector
            loaded, embedder = load_model(cfg.model), Embedder(cfg.embedder)
            space = load_data_space(cfg.data, loaded.tokenizer, loaded.fingerprint, embedder)
        timed = alone(cfg, space, loaded, embedder, pick_queries(space, cfg), args.reps)
        both = records.merge(timed, on="query_id")
        same = (both.distinct == both.distinct_alone).all()
        runner_ms, alone_ms = both.t_select.median() * 1e3, both.alone.median() * 1e3
        table.append({"selector": name, "queries": len(both), "runner_ms": runner_ms, "alone_ms": alone_ms,
                      "runner/alone": runner_ms / alone_ms, "same_distinct": bool(same)})
    df = pd.DataFrame(table)
    print(f"\nt_select recorded by real jobs (budget={args.budget}, default data space; median over queries) against "
          f"the same selections timed alone (median of {args.reps} repeats each)")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"worst runner/alone: {df['runner/alone'].max():.2f} (target <= 1.5); outputs in {out}")
    return df


if __name__ == "__main__":
    main()
