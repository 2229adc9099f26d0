"""Hydra jobs that fail well: one line for a user error, and a sweep that goes on past a failing job (the
failure is returned, not raised) and lists every failure at its end (exit status 1)."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, List, Tuple

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback

from hullft.errors import one_line_errors, user_message
from hullft.signals import Preempted

FAILED = "failed"
log = logging.getLogger(__name__)


def guarded(job: Callable[[], Any]) -> Any:
    """Run a Hydra job. A single run lets errors through (one_line_errors prints them); in a sweep a failed
    job prints its line and returns it, so the sweep goes on and FailureSummary lists it at the end. Either
    way a job that failed leaves no empty output directory behind."""
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    try:
        return job()
    except Exception as e:  # noqa: BLE001 - a user error is one line; in a sweep any failure is recorded
        remove_if_empty(out_dir)
        if hc.mode.name != "MULTIRUN":
            raise
        line = user_message(e)
        if line is None:
            log.exception("job %s failed", hc.job.override_dirname)
        line = line or f"{type(e).__name__}: {e}"
        print("\n".join(f"error: {part}" for part in line.splitlines()), file=sys.stderr)
        return {FAILED: line}


def run_cli(main: Callable[[], Any]) -> None:
    """A Hydra app's entry point: Hydra's own errors reach one_line_errors too, not a traceback. A job stopped
    by a signal exits with 128 + its number (143 for SIGTERM), as the shell and Slurm report a killed job."""
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        with one_line_errors():
            main()
    except Preempted as e:
        print(f"stopped by {e}: the query it was running was not recorded; run the same command again to "
              f"finish the missing queries", file=sys.stderr)
        sys.exit(128 + e.signum)


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
