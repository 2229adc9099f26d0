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
    # the headline preset on the tiny model, nn only; k=100000 is more than the pool holds, so that job fails
    args = " ".join([*tiny_overrides, "selector=nn", "k=40,100000"])
    proc = subprocess.run(["make", "--no-print-directory", "-f", str(REPO / "Makefile"), "reproduce",
                           f"PY={sys.executable}", f"STAMP={stamp}", "PRESET=headline", f"ARGS={args}"],
                          cwd=tmp_path, capture_output=True, text=True, env=os.environ.copy())
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "1 of 2 jobs failed" in proc.stderr and "the pool holds only" in proc.stderr
    assert "results/headline was written from the jobs that finished" in proc.stderr
    table = pd.read_csv(tmp_path / "results" / "headline" / "table.csv")
    overall = table[table.domain == "ALL"]
    assert set(overall.selector) == {"nn"} and set(overall.setting) == {"n=2", "n=4", "n=8"}
    assert (overall.queries == 6).all()  # 3 domains x queries_per_domain=2
    assert (tmp_path / "results" / "headline" / "pareto.png").exists()
