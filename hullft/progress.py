"""A process's last sign of progress: a training step taken, a scoring window scored, a query's records written.

A claim's holder publishes it (hullft/claims.py), so other workers can tell a stuck holder (alive, its heartbeat
beating, but waiting on a lock or a hung call) from a slow one. Marking is an assignment: cheap enough for every
step and window.
"""
from __future__ import annotations

import time

_last = time.time()


def mark() -> None:
    global _last
    _last = time.time()


def last() -> float:
    return _last
