"""A sweep goes on past a failing job: run.py returns the failure instead of raising, and this Hydra callback
lists every failed job when the sweep ends (and makes the sweep's exit status 1)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, List, Tuple

from hydra.experimental.callback import Callback

FAILED = "failed"


def remove_if_empty(directory: Path) -> None:
    """Remove the job directory Hydra made, and the empty folders above it, up to the working directory."""
    cwd = Path.cwd().resolve()
    for d in [directory.resolve(), *directory.resolve().parents]:
        if d == cwd or cwd not in d.parents:
            return
        try:
            d.rmdir()
        except OSError:
            return


class FailureSummary(Callback):
    def __init__(self) -> None:
        self.failures: List[Tuple[str, str]] = []
        self.jobs = 0

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        self.jobs += 1
        value = getattr(job_return, "_return_value", None)
        if isinstance(value, dict) and FAILED in value:
            self.failures.append((config.hydra.job.override_dirname or "(defaults)", value[FAILED]))

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        if not self.failures:
            return
        print(f"\n{len(self.failures)} of {self.jobs} jobs failed:", file=sys.stderr)
        for job, line in self.failures:
            print(f"  {job}: {line.splitlines()[0]}", file=sys.stderr)
        sys.exit(1)
