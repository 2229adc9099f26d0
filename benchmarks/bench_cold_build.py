"""N processes started together on an empty cache against one: what the data space's build costs in CPU seconds.

    python -m benchmarks.bench_cold_build [--workers 4] [override ...]

Each setting gets a fresh, empty `HULLFT_CACHE` and starts its processes together, each running
`python -m hullft.data build` with the overrides given (default: the embedded default data space), one thread
each (pin the whole benchmark with taskset to compare machines). One process builds; the others wait on the
build lock (hullft/data/space.py) and then load what it built. Prints per setting the wall-clock, the CPU seconds
of all its processes together (user + system, from wait4), their ratio to one process, and how many processes
embedded the pool (it must be one). The target: N workers cost at most 1.2x one process's CPU seconds.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent


def cold_build(processes: int, overrides: list, cache: Path) -> dict:
    env = {**os.environ, "HULLFT_CACHE": str(cache), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    procs = {}
    for i in range(processes):
        log = open(cache.parent / f"{cache.name}-{i}.log", "w+")
        p = subprocess.Popen([sys.executable, "-m", "hullft.data", "build", *overrides], cwd=REPO, env=env,
                             stdout=log, stderr=subprocess.STDOUT)
        procs[p.pid] = log
    cpu, embedded, failed = 0.0, 0, []
    while procs:
        pid, status, usage = os.wait4(-1, 0)
        if pid not in procs:
            continue
        log = procs.pop(pid)
        log.seek(0)
        text = log.read()
        log.close()
        seconds = usage.ru_utime + usage.ru_stime
        cpu += seconds
        embedded += "embedding (" in text
        print(f"  process {pid}: {seconds:.1f} CPU s{', embedded the pool' if 'embedding (' in text else ''}"
              f"{', waited for another' if 'being built by another process' in text else ''}", flush=True)
        if os.waitstatus_to_exitcode(status):
            failed.append(text[-1500:])
    if failed:
        raise SystemExit("a build process failed:\n" + "\n".join(failed))
    return {"processes": processes, "wall_s": time.perf_counter() - start, "cpu_s": cpu, "embedded_by": embedded}


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, args.workers):
            print(f"{n} process(es) on an empty cache:", flush=True)
            rows.append(cold_build(n, args.overrides, Path(tmp) / f"cache-{n}"))
    df = pd.DataFrame(rows)
    df["cpu_vs_one"] = df.cpu_s / df.cpu_s.iloc[0]
    print(df.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    return df


if __name__ == "__main__":
    main()
