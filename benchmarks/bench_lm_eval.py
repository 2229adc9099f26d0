"""The lm-eval path against run.py on the same documents: BPB beside BPB, and what the lm-eval path adds.

    python -m benchmarks.bench_lm_eval [--out /tmp/bench-lm-eval] [--arms none,finetune,incontext] [override ...]

For each arm (`method=none`; `method=finetune selector=nn budget=4`; `method=incontext selector=nn budget=4`),
run.py's job over the config's query documents, then `python -m hullft.lm_eval` on a local lm-eval task holding
the same documents (a loglikelihood_rolling task with lm-eval's bits_per_byte), each in a fresh directory and
timed from start to exit. Prints per arm: lm-eval's bits_per_byte, the byte-weighted BPB of the lm-eval run's
records and of run.py's, how many documents the leakage screen touched, the mean seconds per document in the
records (t_total) of both, and the wall clock of both commands with their ratio. Name the CPU beside the figures.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
ARMS = {"none": ["method=none"], "finetune": ["method=finetune", "selector=nn", "budget=4"],
        "incontext": ["method=incontext", "selector=nn", "budget=4"]}

def timed(argv) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"failed: {' '.join(argv)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def bpb(records: pd.DataFrame) -> float:
    return records.nll_nats.sum() / math.log(2) / records.query_bytes.sum()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/bench-lm-eval")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    from hullft.lm_eval.tasks import held_out_documents, write_rolling_task

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    docs = held_out_documents(args.overrides)
    write_rolling_task(out / "task", "heldout", docs.text)
    print(f"{len(docs)} documents ({', '.join(sorted(set(docs.domain)))}); overrides: {' '.join(args.overrides)}")
    rows = []
    for arm in args.arms.split(","):
        overrides = [*args.overrides, *ARMS[arm]]
        run_s = timed([sys.executable, "run.py", *overrides, f"hydra.run.dir={out / arm / 'run'}"])
        lm_s = timed([sys.executable, "-m", "hullft.lm_eval", "--tasks", "heldout", "--include_path",
                      str(out / "task"), "--output_path", str(out / arm / "lm_eval"), *overrides])
        theirs = json.loads(next((out / arm / "lm_eval").rglob("results_*.json")).read_text())
        ours = pd.read_parquet(out / arm / "run" / "records.parquet")
        served = pd.read_parquet(next((out / arm / "lm_eval" / "records").rglob("records.parquet")))
        rows.append({"arm": arm, "lm_eval_bpb": theirs["results"]["heldout"]["bits_per_byte,none"],
                     "lm_eval_records_bpb": bpb(served), "run_py_bpb": bpb(ours),
                     "leaky_docs": int((served.leaked > 0).sum()), "t_doc_run_py": ours.t_total.mean(),
                     "t_doc_lm_eval": served.t_total.mean(), "wall_run_py": run_s, "wall_lm_eval": lm_s,
                     "wall_ratio": lm_s / run_s})
        print(pd.DataFrame(rows[-1:]).to_string(index=False, float_format=lambda v: f"{v:.4f}"), flush=True)
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
