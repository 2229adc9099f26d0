"""Anytime curves against today's n-sweep, for the greedy selectors; both measured in this run.

    python -m benchmarks.bench_anytime [--budgets 2 4 8] [--queries 1] [--selectors nn sift_exact us]

For each greedy selector: the n-sweep as separate jobs (one per n, as `-m budget=2,4,8` runs them) and one
checkpointed pass (`budget=8 checkpoints=[2,4]`), on the embedded default. Prints, per selector, the optimizer
steps and the compute seconds per query each way (retrieve + select + finetune + score, as executed: the
pass's prefix selections and checkpoint scorings included) and their ratios, and checks that BPB% at every n
is the same both ways (the test suite checks this to 1e-6 on a tiny model).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

from hullft.compose import compose_config
from hullft.runner import run_job


def sweep(base, budgets, out: Path) -> pd.DataFrame:
    return pd.concat([run_job(compose_config([*base, f"budget={n}"]), out / f"n{n}") for n in budgets])


def executed(records: pd.DataFrame, one_pass: bool) -> pd.Series:
    """Per query: optimizer steps and compute seconds as they were spent."""
    g = records.groupby("query_id")
    if not one_pass:
        return pd.DataFrame({"steps": g.opt_steps.sum(), "seconds": g.t_total.sum()})
    seconds = g.t_retrieve.first() + g.t_select.sum() + g.t_finetune.max() + g.t_eval.sum()
    return pd.DataFrame({"steps": g.opt_steps.max(), "seconds": seconds})


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--queries", type=int, default=1, help="queries per domain")
    ap.add_argument("--selectors", nargs="+", default=["nn", "sift_exact", "us"])
    ap.add_argument("overrides", nargs="*", help="hydra overrides for every job, e.g. data.domains=[kjv,python]")
    args = ap.parse_args(argv)
    budgets = sorted(args.budgets)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for selector in args.selectors:
            base = [f"selector={selector}", f"queries_per_domain={args.queries}", "engine.order=as_selected",
                    *args.overrides]
            separate = sweep(base, budgets, Path(tmp) / selector / "sweep")
            curve = run_job(compose_config([*base, f"budget={budgets[-1]}", f"checkpoints={budgets[:-1]}"]),
                            Path(tmp) / selector / "pass")
            a, b = executed(separate, False).sum(), executed(curve, True).sum()
            diff = (curve.set_index(["query_id", "n"]).bpb_pct
                    - separate.set_index(["query_id", "n"]).bpb_pct).abs().max()
            rows.append({"selector": selector, "queries": curve.query_id.nunique(),
                         "steps_sweep": int(a.steps), "steps_pass": int(b.steps), "steps_ratio": a.steps / b.steps,
                         "s_sweep": a.seconds, "s_pass": b.seconds, "time_ratio": a.seconds / b.seconds,
                         "max_bpb_pct_diff": diff})
    df = pd.DataFrame(rows)
    print(f"n-sweep {budgets} as separate jobs vs one pass with checkpoints={budgets[:-1]} (sums over queries)")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    return df


if __name__ == "__main__":
    main()
