"""Many workers on one output directory against one worker and against static shards, timed in one run.

    python -m benchmarks.bench_workers [--queries-per-domain 6] [--budget 16] [--workers 2]

On a small GPT-2-shaped model built from a config (4 layers, 256 wide) and the tests' Pile-format fixture
corpus (real text whose queries differ in length, ~60 to ~1200 tokens), `selector=nn`:
- one process running every query;
- `--workers` processes started together on one directory (they share the queries through claims);
- `--workers` static shards (`num_shards=N shard=i`), started together.
Each process gets cores / processes threads (OMP_NUM_THREADS). Prints each setting's wall-clock (start of the first process to the end of the last), its ratio to one process,
and for the multi-process settings each process's busy time (the summed `t_total` of the queries it recorded)
and the imbalance (the largest busy time over the mean). Every setting's records are checked to be the same
queries with the same BPB.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from hullft.report.loading import load_records

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from conftest import TINY_RUN, write_pile_fixture  # noqa: E402


def timed(commands, cwd: Path) -> float:
    """Wall-clock of `commands` started together, each process given an equal share of the cores (more threads
    than cores, as two 2-thread processes on 2 cores, makes every process slower than running them in turn)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, len(os.sched_getaffinity(0)) // len(commands)))}
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, str(REPO / "run.py"), *c], cwd=cwd, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env=env) for c in commands]
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(err[-2000:])
    return time.perf_counter() - start


def busy(records: pd.DataFrame, by: str) -> pd.DataFrame:
    return records.groupby(by).agg(seconds=("t_total", "sum"), queries=("t_total", "size"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries-per-domain", type=int, default=6)
    ap.add_argument("--budget", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("HULLFT_CACHE", str(tmp / "cache"))
        corpus = write_pile_fixture(tmp / "pile.jsonl")
        base = [*TINY_RUN, f"data.path={corpus}", f"queries_per_domain={args.queries_per_domain}", "selector=nn",
                f"budget={args.budget}", f"k={max(40, args.budget)}", "model.n_layer=4", "model.n_embd=256", "model.n_head=4"]
        timed([base + ["tag=warm"]], tmp)  # builds the data space and base scores once, untimed
        n = args.workers
        wall = {"1 process": timed([base + ["tag=one"]], tmp),
                f"{n} workers, one directory": timed([base + ["tag=shared"]] * n, tmp),
                f"{n} static shards": timed([base + ["tag=shards", f"num_shards={n}", f"shard={i}"]
                                             for i in range(n)], tmp)}
        one = load_records([tmp / "outputs" / "one"]).sort_values("query_id")
        shared = load_records([tmp / "outputs" / "shared"]).sort_values("query_id")
        shards = load_records([tmp / "outputs" / "shards"]).sort_values("query_id")
        for other in (shared, shards):
            assert other.query_id.tolist() == one.query_id.tolist()
            # one thread per process against two: float sums in another order, so equal to rounding, not bitwise
            np.testing.assert_allclose(other.bpb.values, one.bpb.values, rtol=1e-5)
        print(f"{len(one)} queries, query tokens {one.query_tokens.min()}-{one.query_tokens.max()}, "
              f"budget {args.budget}, {os.cpu_count()} cores")
        print(f"largest BPB difference from one process: "
              f"{max(np.abs(o.bpb.values - one.bpb.values).max() for o in (shared, shards)):.1e}")
        for name, seconds in wall.items():
            print(f"{name:>28}: {seconds:6.1f} s wall-clock ({seconds / wall['1 process']:.2f} of one process)")
        for name, per in ((f"{n} workers", busy(shared, "process")), (f"{n} static shards", busy(shards, "shard"))):
            print(f"{name:>28}: busy {', '.join(f'{s:.1f}' for s in per.seconds)} s over "
                  f"{', '.join(map(str, per.queries))} queries; imbalance (max / mean) "
                  f"{per.seconds.max() / per.seconds.mean():.2f}")


if __name__ == "__main__":
    main()
