"""The surrogate model SIFT and US reason with: a Gaussian process with the linear kernel k(x, x') = <x, x'>
over embeddings and observation noise variance lambda (top-level `llambda`, shared with sift, sift_exact, us).

sigma_n is the posterior standard deviation of the query after observing the first n selected rows
(repeats are repeated noisy observations):
    sigma_n^2 = k(q, q) - k_S(q)^T (K_SS + lambda I)^-1 k_S(q).
For SIFT it equals sqrt(-value) of activeft's n-th pick; the harness records it for every selector.
"""
from __future__ import annotations

import numpy as np


def observe(points: np.ndarray, U: np.ndarray, t: int, j: int, llambda: float) -> np.ndarray:
    """Condition on a noisy observation of points[j], the t-th one: row t of the low-rank factor U, with the
    posterior kernel k_t(a, b) = <a, b> - sum_{l<t} U[l, a] U[l, b] over `points` (a pivoted Cholesky step).
    The posterior variance of every point then drops by the square of its entry in the returned row."""
    column = points @ points[j] - U[:t].T @ U[:t, j]   # k_t(., x_j)
    U[t] = column / np.sqrt(column[j] + llambda)
    return U[t]


def posterior_variances(query: np.ndarray, rows: np.ndarray, llambda: float) -> np.ndarray:
    """(len(rows) + 1,) posterior variances of the query after 0, 1, ..., len(rows) of the rows, in order.
    Incremental (pivoted Cholesky of K_SS + lambda I): O(n^2 d) for all prefixes at once."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, len(query))
    q = np.asarray(query, dtype=np.float64)
    n = len(rows)
    points = np.vstack([rows, q[None, :]])
    U = np.zeros((n, n + 1))
    out = np.empty(n + 1)
    out[0] = q_var = float(q @ q)
    for t in range(n):
        q_var -= observe(points, U, t, t, llambda)[-1] ** 2
        out[t + 1] = q_var
    return np.maximum(out, 0.0)


def posterior_sigma(query: np.ndarray, rows: np.ndarray, llambda: float) -> float:
    """sigma_n of the query after all the rows (order does not matter)."""
    return float(np.sqrt(posterior_variances(query, rows, llambda)[-1]))
