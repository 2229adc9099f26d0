"""`make reproduce` writes its report from the jobs that finished, even when one job of the sweep fails."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent


def test_reproduce_writes_the_report_when_a_job_fails(tmp_path, tiny_overrides):
    stamp = tmp_path / "installed"
    stamp.touch()  # newer than pyproject.toml: make's install step has nothing to do
    # the headline preset and its rivals on the tiny model: in-context reading of 2056 tokens does not fit its
    # context of 512, so both incontext jobs fail; the report is written from the other six
    args = " ".join(tiny_overrides)
    proc = subprocess.run(["make", "--no-print-directory", "-f", str(REPO / "Makefile"), "reproduce",
                           f"PY={sys.executable}", f"STAMP={stamp}", "PRESET=headline", f"ARGS={args}"],
                          cwd=tmp_path, capture_output=True, text=True, env=os.environ.copy())
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "2 of 2 jobs failed" in proc.stderr and "method.context_tokens=2056 > the model's context" in proc.stderr
    assert "results/headline was written from the jobs that finished" in proc.stderr
    table = pd.read_csv(tmp_path / "results" / "headline" / "table.csv")
    overall = table[table.domain == "ALL"]
    arms = set(zip(overall.method, overall.selector, overall.setting))
    assert arms == {("finetune", s, f"n={n}") for s in ("hullft", "sift", "nn", "us") for n in (2, 4, 8)} | {
        ("dynamic_eval", "none", "n=0"), ("none", "none", "n=0")}
    assert (overall.queries == 6).all()  # 3 domains x queries_per_domain=2
    assert (tmp_path / "results" / "headline" / "pareto.png").exists()
