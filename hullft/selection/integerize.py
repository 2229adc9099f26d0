"""Turn simplex weights on a support into an exact integer multiset of size N (HullFT step 3).

Geometric: floor(N w), then each remaining unit goes where it most reduces ||t - sum_i (c_i/N) x_i||^2,
then single-unit moves i -> j that lower that loss, steepest first, up to `swap_passes` x m moves.
Largest-remainder rounding is also scored and the local search starts from whichever start is better,
so geometric is never worse than largest remainder. Everything is in Gram form over the support
(m <= N rows); the loops are compiled with numba.
"""
from __future__ import annotations

import numba
import numpy as np


def integer_loss(counts: np.ndarray, G: np.ndarray, b: np.ndarray, tt: float, n: int) -> float:
    """||t - sum_i (c_i/n) x_i||^2 with G the support's Gram matrix and b = X t."""
    c = counts / n
    return float(tt - 2 * b @ c + c @ G @ c)


def largest_remainder(weights: np.ndarray, n: int) -> np.ndarray:
    w = weights / weights.sum()
    counts = np.floor(n * w).astype(np.int64)
    remainder = n * w - counts
    extra = np.argsort(-remainder, kind="stable")[: n - counts.sum()]
    counts[extra] += 1
    return counts


@numba.njit(cache=True)
def _greedy_fill(counts, G, b, n):
    m = counts.shape[0]
    counts = counts.copy()
    u = G @ counts.astype(np.float64)         # (G c)_i
    for _ in range(n - counts.sum()):
        # loss change of adding a unit to i, up to a constant: -2/n <t - p, x_i> + G_ii / n^2
        best, i = np.inf, 0
        for j in range(m):
            delta = -2.0 / n * (b[j] - u[j] / n) + G[j, j] / (n * n)
            if delta < best:
                best, i = delta, j
        counts[i] += 1
        u += G[i]
    return counts


@numba.njit(cache=True)
def _local_search(counts, G, b, n, max_moves):
    m = counts.shape[0]
    counts = counts.copy()
    u = G @ counts.astype(np.float64)
    for _ in range(max_moves):
        best, src, dst = 1e-15, -1, -1
        for i in range(m):
            if counts[i] == 0:
                continue
            hi = b[i] - u[i] / n              # <t - p, x_i>
            for j in range(m):
                # loss decrease of moving one unit i -> j: 2 <e, d> - ||d||^2 with d = (x_j - x_i) / n
                gain = 2.0 * ((b[j] - u[j] / n) - hi) / n - (G[j, j] - 2.0 * G[i, j] + G[i, i]) / (n * n)
                if gain > best:
                    best, src, dst = gain, i, j
        if src < 0:
            break
        counts[src] -= 1
        counts[dst] += 1
        u += G[dst] - G[src]
    return counts


def geometric_integerize(G: np.ndarray, b: np.ndarray, tt: float, weights: np.ndarray, n: int,
                         swap_passes: int = 2):
    """Counts (one per support row, zeros allowed) summing to n, and their loss; G, b, tt in Gram form."""
    w = weights / weights.sum()
    starts = [_greedy_fill(np.floor(n * w).astype(np.int64), G, b, n), largest_remainder(w, n)]
    start = min(starts, key=lambda c: integer_loss(c, G, b, tt, n))
    counts = _local_search(start, G, b, n, swap_passes * len(w))
    return counts, integer_loss(counts, G, b, tt, n)
