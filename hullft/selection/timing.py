"""Selection as the runner times it: every selector under one rule, with BLAS held to one thread.

Right after torch work, torch's OpenMP workers keep spinning for a while; a multi-threaded BLAS call made
then fights them for the cores (measured on 2 cores: a 0.7 ms HullFT call took 12 ms right after a
training step). With BLAS at one thread for the call, `t_select` measures the selector, not that
contention. Selectors that compute with torch (activeft's SIFT) use torch's own pool and are unaffected.
"""
from __future__ import annotations

import time
from typing import Tuple

import numpy as np
from threadpoolctl import ThreadpoolController

from hullft.selection.multiset import Multiset

_controller = None


def _blas():
    global _controller
    if _controller is None:  # finding the loaded BLAS libraries takes milliseconds: once per process
        _controller = ThreadpoolController()
    return _controller


def one_blas_thread():
    return _blas().limit(limits=1, user_api="blas")


def timed_select(selector, query: np.ndarray, candidates: np.ndarray, n: int) -> Tuple[Multiset, float]:
    """selector.select(query, candidates, n) and its wall-clock in seconds."""
    with one_blas_thread():
        start = time.perf_counter()
        multiset = selector.select(query, candidates, n)
        seconds = time.perf_counter() - start
    return multiset, seconds
