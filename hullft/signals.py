"""SIGTERM (Slurm preemption, scancel, a requeue) and SIGINT (Ctrl-C) stop a job between two torch calls, but never
inside a section that holds a lock or writes a record.

    with stop_on_signals():        # the job: a signal raises Preempted in the main thread ...
        with uninterrupted():      # ... except in here: it is kept and raised when the section ends
            ...                    # (a lock held, records appended, claims written)

So a job stops within one training step, and a signal never leaves a lock held, a claim half-made or a record
half-written.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Optional


class Preempted(BaseException):
    """SIGTERM or SIGINT during a job. Not an Exception: a sweep must stop, not record a failure and go on."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_depth = 0                      # nesting of uninterrupted sections in the main thread
_pending: Optional[int] = None  # a signal that arrived inside one


@contextmanager
def uninterrupted():
    """A section a signal must not cut; one that arrives meanwhile is raised as Preempted when it ends."""
    global _depth, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending is not None:
            signum, _pending = _pending, None
            raise Preempted(signum)


@contextmanager
def stop_on_signals():
    """SIGTERM and SIGINT raise Preempted in the main thread (outside uninterrupted sections): the running query
    is dropped unwritten and its claim released on the way out."""
    global _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        global _pending
        if _depth:
            _pending = signum
        else:
            raise Preempted(signum)

    _pending = None
    before = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
