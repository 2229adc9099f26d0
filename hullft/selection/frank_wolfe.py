"""Frank-Wolfe for  min_{w in simplex} ||t - X^T w||^2  (HullFT step 2), in Gram-matrix form.

With G = X X^T and b = X t precomputed, the oracle's scores are <x_i, r> = b_i - (G w)_i, and g = G w
moves along each step as g <- (1 - gamma) g + gamma G_s, so an iteration is one O(K) pass and nothing is
d-dimensional. The loop is compiled with numba: it is the inner loop of every HullFT query.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np


@dataclass
class FWResult:
    weights: np.ndarray   # (K,) on the simplex
    residual: float       # ||t - X^T w||
    iterations: int


@numba.njit(cache=True)
def _frank_wolfe(G, b, tt, support_cap, max_iter, tol, away_steps):
    K = b.shape[0]
    first = np.argmax(b)
    w = np.zeros(K)
    w[first] = 1.0
    g = G[first].copy()                       # G w; G is symmetric, so rows are columns
    it = 0
    for it in range(1, max_iter + 1):
        bw = np.dot(b, w)
        wg = np.dot(w, g)
        if tt - 2.0 * bw + wg < tol * tol:
            break
        inner = bw - wg                       # <r, X^T w>
        s, best, a, worst = 0, -np.inf, -1, np.inf
        for i in range(K):                    # Frank-Wolfe vertex, and the away vertex on the support
            score = b[i] - g[i]               # <x_i, r>
            if score > best:
                s, best = i, score
            if w[i] > 0.0 and score < worst:
                a, worst = i, score
        if away_steps and inner - worst > best - inner and w[a] < 1.0:
            d2 = wg - 2.0 * g[a] + G[a, a]    # ||X^T w - x_a||^2
            if d2 < 1e-12:
                break
            gamma = min(max((inner - worst) / d2, 0.0), w[a] / (1.0 - w[a]))
            for i in range(K):
                w[i] *= 1.0 + gamma
                g[i] = (1.0 + gamma) * g[i] - gamma * G[a, i]
            w[a] -= gamma
            if w[a] < 1e-15:
                w[a] = 0.0                    # a drop step: a leaves the support
            continue
        d2 = G[s, s] - 2.0 * g[s] + wg        # ||x_s - X^T w||^2
        if d2 < 1e-12:
            break
        gamma = min(max((best - inner) / d2, 0.0), 1.0)
        if gamma <= 0.0:
            break                             # the oracle would return the same vertex forever
        support = 0
        for i in range(K):
            w[i] *= 1.0 - gamma
            g[i] = (1.0 - gamma) * g[i] + gamma * G[s, i]
        w[s] += gamma
        for i in range(K):
            support += w[i] > 0.0
        if support >= support_cap:
            break
    return w, it


def gram_form(X: np.ndarray, t: np.ndarray):
    """G = X X^T (one BLAS call in the input's precision), b = X t and t.t, in float64."""
    t64 = t.astype(np.float64)
    return (X @ X.T).astype(np.float64), X.astype(np.float64) @ t64, float(t64 @ t64)


def frank_wolfe(X: np.ndarray, t: np.ndarray, support_cap: int, max_iter: int = 250, tol: float = 1e-5,
                away_steps: bool = False, gram=None) -> FWResult:
    """Start at the 1-NN vertex, exact line search; stop at ||r|| < tol, a vanishing step, |support| >= cap,
    or max_iter. `away_steps` adds away steps (Guelat-Marcotte), which converge linearly where vanilla
    Frank-Wolfe zig-zags near a face; the reference method is vanilla. `gram`: gram_form(X, t) if at hand."""
    G, b, tt = gram if gram is not None else gram_form(X, t)
    w, it = _frank_wolfe(G, b, tt, support_cap, max_iter, tol, away_steps)
    residual = float(np.sqrt(max(tt - 2 * float(b @ w) + float(w @ G @ w), 0.0)))
    return FWResult(weights=w, residual=residual, iterations=int(it))
