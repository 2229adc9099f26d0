"""Frank-Wolfe for  min_{w in simplex} ||t - X^T w||^2  (HullFT step 2), in Gram-matrix form.

All per-iteration work is O(K): with G = X X^T and b = X t precomputed, the residual's inner products
are <x_i, r> = b_i - (G w)_i, and g = G w is updated incrementally along each step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FWResult:
    weights: np.ndarray   # (K,) on the simplex
    residual: float       # ||t - X^T w||
    iterations: int


def frank_wolfe(X: np.ndarray, t: np.ndarray, support_cap: int, max_iter: int = 250, tol: float = 1e-5,
                away_steps: bool = False, gram: np.ndarray | None = None) -> FWResult:
    """Start at the 1-NN vertex, exact line search, stop at ||r|| < tol, a vanishing step, |support| >= cap,
    or max_iter. `away_steps` adds away steps (Guelat-Marcotte), which converge linearly where vanilla
    Frank-Wolfe zig-zags; the reference method is vanilla."""
    X = X.astype(np.float64, copy=False)
    t = t.astype(np.float64, copy=False)
    G = X @ X.T if gram is None else gram
    b = X @ t
    tt = float(t @ t)
    diagG = np.diag(G)
    first = int(np.argmax(b))
    w = np.zeros(len(X))
    w[first] = 1.0
    g = G[:, first].copy()
    it = 0
    for it in range(1, max_iter + 1):
        bw, wg = float(b @ w), float(w @ g)
        r2 = max(tt - 2 * bw + wg, 0.0)
        if np.sqrt(r2) < tol:
            break
        score = b - g                      # <x_i, r>
        s = int(np.argmax(score))
        gap_fw = score[s] - (bw - wg)      # <r, x_s - X^T w>
        d2_fw = diagG[s] - 2 * g[s] + wg   # ||x_s - X^T w||^2
        support = np.flatnonzero(w > 0)
        v = int(support[np.argmin(score[support])])
        gap_away = (bw - wg) - score[v]    # <r, X^T w - x_v>
        if away_steps and gap_away > gap_fw and w[v] < 1.0:
            d2 = wg - 2 * g[v] + diagG[v]
            if d2 < 1e-12:
                break
            gamma = float(np.clip(gap_away / d2, 0.0, w[v] / (1.0 - w[v])))
            w *= 1.0 + gamma
            w[v] -= gamma
            if w[v] < 1e-15:
                w[v] = 0.0  # a drop step removes v from the support
            g = (1.0 + gamma) * g - gamma * G[:, v]
        else:
            if d2_fw < 1e-12:
                break
            gamma = float(np.clip(gap_fw / d2_fw, 0.0, 1.0))
            if gamma <= 0.0:
                break  # the oracle would return the same vertex forever
            w *= 1.0 - gamma
            w[s] += gamma
            g = (1.0 - gamma) * g + gamma * G[:, s]
        if np.count_nonzero(w) >= support_cap:
            break
    residual = float(np.sqrt(max(tt - 2 * float(b @ w) + float(w @ g), 0.0)))
    return FWResult(weights=w, residual=residual, iterations=it)
