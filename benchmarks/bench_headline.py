"""The headline preset's seconds per query: today's engine (the defaults: bf16 where native, compiled steps, freed
memory kept in the process) against the fp32 eager engine it replaced, alternated selector by selector in one run.

    python -m benchmarks.bench_headline [--out /tmp/bench-headline] [--selectors hullft,sift,nn,us] [override ...]

For each selector of `experiments/headline.yaml`, one job as `model.dtype=fp32 engine.compile=false` with glibc
set in its environment as the harness set it then (mmap threshold 32 MB, trimming at 1 GB; hullft/memory.py
leaves a user's glibc settings alone), then one with the defaults, each into a fresh directory under --out (so
nothing resumes), on the same queries and data space. Prints per selector and overall the mean seconds per query
record (t_total: retrieve, select, finetune, score; a compile is outside it, as in every record), its parts, and
the ratio fp32 / default. Pin the run with taskset and OMP_NUM_THREADS to compare machines; name the CPU beside
the figures.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
GLIBC_THEN = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
ARMS = {"fp32 eager": (["model.dtype=fp32", "engine.compile=false"], GLIBC_THEN), "default": ([], {})}
PARTS = ["t_total", "t_retrieve", "t_select", "t_finetune", "t_eval"]


def job(selector: str, arm: str, overrides: list, out: Path) -> pd.DataFrame:
    directory = out / f"{selector}-{arm.replace(' ', '-')}"
    shutil.rmtree(directory, ignore_errors=True)
    settings, env = ARMS[arm]
    argv = [sys.executable, "run.py", "+experiments=headline", f"selector={selector}", *settings, *overrides,
            f"hydra.run.dir={directory}"]
    print(f"{selector}, {arm}: {' '.join(argv[2:])} {env or ''}", flush=True)
    subprocess.run(argv, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, **env})
    return pd.read_parquet(directory / "records.parquet").assign(arm=arm)


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/bench-headline")
    ap.add_argument("--selectors", default="hullft,sift,nn,us")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    out = Path(args.out)
    records = pd.concat([job(s, arm, args.overrides, out) for s in args.selectors.split(",") for arm in ARMS])
    print(f"\nCPU: {records.cpu.iloc[0]}; threads: {os.environ.get('OMP_NUM_THREADS', 'default')}; "
          f"default's precision: {records[records.arm == 'default'].dtype.iloc[0]}")
    table = records.groupby(["selector", "arm"])[PARTS].mean().unstack("arm")
    overall = records.groupby("arm")[PARTS].mean()
    print("\nmean seconds per query record, by selector:")
    print(table["t_total"].assign(ratio=lambda t: t["fp32 eager"] / t["default"])
          .to_string(float_format=lambda v: f"{v:.2f}"))
    print("\nall selectors, mean seconds per query record and its parts:")
    print(overall.T.assign(ratio=lambda t: t["fp32 eager"] / t["default"]).to_string(float_format=lambda v: f"{v:.2f}"))
    return records


if __name__ == "__main__":
    main()
