"""Adaptive budgets (SIFT's stopping rule, activeft main's `Retriever(alpha=...)`): of the selections of
size m = 0..budget, take the largest m with alpha * m * sigma_m <= 1, where sigma_m is the query's posterior
standard deviation after the m-element selection (hullft/selection/posterior.py). m = 0 (no step) always qualifies.

A greedy selector is asked once, at the budget, and truncated (its first m picks are its selection at m);
any other selector (HullFT) is asked at every m = 1..budget, since alpha * m * sigma_m need not be
monotone in m and a bisection could miss the largest m. The whole search is the query's `t_select`.
"""
from __future__ import annotations

import time
from typing import Optional, Sequence, Tuple

import numpy as np

from hullft.selection.multiset import Multiset
from hullft.selection.posterior import posterior_sigma, posterior_variances
from hullft.selection.timing import one_blas_thread


def largest_within(sigmas: Sequence[float], alpha: float) -> int:
    """The largest m with alpha * m * sigmas[m] <= 1 (sigmas[m]: after m elements, m = 0..budget)."""
    return max(m for m, s in enumerate(sigmas) if alpha * m * s <= 1)


def select_adaptive(selector, query: np.ndarray, candidates: np.ndarray, budget: int, alpha: float,
                    llambda: float) -> Tuple[Optional[Multiset], float]:
    """(the chosen selection, None for m = 0; seconds)."""
    with one_blas_thread():
        start = time.perf_counter()
        if getattr(selector, "greedy", False):
            rows = selector.select(query, candidates, budget).ordered_rows()
            sigmas = np.sqrt(posterior_variances(query, candidates[rows], llambda))
            m = largest_within(sigmas, alpha)
            chosen = Multiset.from_picks(rows[:m]) if m else None
        else:
            selections = [None] + [selector.select(query, candidates, m) for m in range(1, budget + 1)]
            sigmas = [float(np.sqrt(query @ query))] + [
                posterior_sigma(query, candidates[s.ordered_rows()], llambda) for s in selections[1:]]
            chosen = selections[largest_within(sigmas, alpha)]
        return chosen, time.perf_counter() - start
