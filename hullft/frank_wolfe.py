"""Frank-Wolfe for  min_{w in simplex} ||t - X^T w||^2  (HullFT step 2), in Gram-matrix form.

With G = X X^T and b = X t precomputed, every quantity the method needs is O(K) per iteration:
<x_i, r> = b_i - (G w)_i, and g = G w, <b, w> and <w, G w> are updated along each step, so one
iteration is a handful of length-K vector operations and no d-dimensional work.
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
                away_steps: bool = False) -> FWResult:
    """Start at the 1-NN vertex, exact line search; stop at ||r|| < tol, a vanishing step, |support| >= cap,
    or max_iter. `away_steps` adds away steps (Guelat-Marcotte), which converge linearly where vanilla
    Frank-Wolfe zig-zags near a face; the reference method is vanilla."""
    X = X.astype(np.float64, copy=False)
    t = t.astype(np.float64, copy=False)
    G = X @ X.T
    b = X @ t
    tt = float(t @ t)
    first = int(np.argmax(b))
    w = np.zeros(len(X))
    w[first] = 1.0
    g = G[first].copy()               # G w (G is symmetric, so rows are columns)
    bw, wg = float(b[first]), float(G[first, first])
    support = 1
    it = 0
    for it in range(1, max_iter + 1):
        if tt - 2 * bw + wg < tol * tol:
            break
        score = b - g                 # <x_i, r>
        s = int(score.argmax())
        inner = bw - wg               # <r, X^T w>
        if away_steps:
            active = np.flatnonzero(w)
            v = int(active[score[active].argmin()])
            if inner - score[v] > score[s] - inner and w[v] < 1.0:
                d2 = wg - 2 * g[v] + G[v, v]
                if d2 < 1e-12:
                    break
                gamma = min(max((inner - score[v]) / d2, 0.0), w[v] / (1.0 - w[v]))
                w *= 1.0 + gamma
                w[v] -= gamma
                if w[v] < 1e-15:
                    w[v] = 0.0        # a drop step: v leaves the support
                g *= 1.0 + gamma
                g -= gamma * G[v]
                bw, wg = float(b @ w), float(w @ g)
                support = int(np.count_nonzero(w))
                continue
        gs, gss = float(g[s]), float(G[s, s])
        d2 = gss - 2 * gs + wg        # ||x_s - X^T w||^2
        if d2 < 1e-12:
            break
        gamma = min(max((score[s] - inner) / d2, 0.0), 1.0)
        if gamma <= 0.0:
            break                     # the oracle would return the same vertex forever
        keep = 1.0 - gamma
        support += w[s] == 0.0
        w *= keep
        w[s] += gamma
        g *= keep
        g += gamma * G[s]
        bw = keep * bw + gamma * float(b[s])
        wg = keep * keep * wg + 2 * gamma * keep * gs + gamma * gamma * gss
        if support >= support_cap:
            break
    residual = float(np.sqrt(max(tt - 2 * float(b @ w) + float(w @ g), 0.0)))
    return FWResult(weights=w, residual=residual, iterations=it)
