"""Turn simplex weights on a support into an exact integer multiset of size N (HullFT step 3).

Geometric: floor(N w), then each remaining unit goes where it most reduces ||t - sum_i (c_i/N) x_i||^2,
then single-unit moves i -> j that lower that loss (steepest first, up to `swap_passes` x m moves). The same swap passes are also
run from largest-remainder rounding and the better result is kept, so geometric is never worse than it.
Everything is in Gram form over the support (m <= N rows), vectorised over candidates.
"""
from __future__ import annotations

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


def _greedy_fill(counts: np.ndarray, G: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    counts = counts.copy()
    u = G @ counts  # (G c)_i
    diag = np.diag(G)
    for _ in range(n - int(counts.sum())):
        # loss after adding a unit to i, up to a constant: -2/n <t - p, x_i> + G_ii / n^2
        delta = -2.0 / n * (b - u / n) + diag / n**2
        i = int(np.argmin(delta))
        counts[i] += 1
        u += G[:, i]
    return counts


def _swap_passes(counts: np.ndarray, G: np.ndarray, b: np.ndarray, n: int, passes: int) -> np.ndarray:
    """Single-unit moves i -> j, best move first, while one lowers the loss (at most passes * m moves)."""
    counts = counts.copy()
    u = G @ counts
    diag = np.diag(G)
    # ||x_j - x_i||^2 / n^2: the quadratic part of every move's loss change
    sq = (diag[None, :] - 2 * G + diag[:, None]) / n**2
    for _ in range(passes * len(counts)):
        h = b - u / n  # <t - p, x_j>
        gain = 2.0 * (h[None, :] - h[:, None]) / n - sq  # gain[i, j]: loss decrease of moving a unit i -> j
        gain[counts == 0] = -np.inf
        i, j = divmod(int(gain.argmax()), len(counts))
        if not gain[i, j] > 1e-15:
            break
        counts[i] -= 1
        counts[j] += 1
        u += G[j] - G[i]
    return counts


def geometric_integerize(X: np.ndarray, t: np.ndarray, weights: np.ndarray, n: int, swap_passes: int = 2):
    """Counts (same order as X's rows, zeros allowed) summing to n."""
    X = X.astype(np.float64, copy=False)
    t = t.astype(np.float64, copy=False)
    G, b, tt = X @ X.T, X @ t, float(t @ t)
    w = weights / weights.sum()
    floor = np.floor(n * w).astype(np.int64)
    starts = [_greedy_fill(floor, G, b, n), largest_remainder(w, n)]
    results = [_swap_passes(c, G, b, n, swap_passes) for c in starts]
    losses = [integer_loss(c, G, b, tt, n) for c in results]
    return results[int(np.argmin(losses))], min(losses)
