"""Frank-Wolfe for  min_{w in simplex} ||t - X^T w||^2  (HullFT step 2), in Gram-matrix form.

With G = X X^T and b = X t, the oracle needs the scores <x_i, r> = b_i - (G w)_i. A Frank-Wolfe step
w <- (1 - gamma) w + gamma e_s changes them to (1 - gamma) score + gamma (b - G_s), so with M = b - G
(row s is that direction) the scores are kept as sigma * z: the step only rescales sigma and adds one row
of M to z, and the weights are kept the same way (w = sigma * v). One iteration is then an argmax and one
axpy over K plus scalar updates of <b, w> and <w, G w>; nothing is d-dimensional.
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
    M = b[None, :] - G
    diag = np.diag(G)
    b_at, diag_at = b.tolist(), diag.tolist()        # Python floats: fast scalar access in the loop
    first = int(np.argmax(b))
    sigma, v, z = 1.0, np.zeros(len(X)), M[first].copy()
    v[first] = 1.0
    bw, wg = float(b[first]), float(diag[first])   # <b, w>, <w, G w>
    support, it = 1, 0
    for it in range(1, max_iter + 1):
        if tt - 2 * bw + wg < tol * tol:
            break
        inner = bw - wg                              # <r, X^T w>
        s = int(z.argmax())
        score_s = sigma * z.item(s)
        if away_steps:
            active = np.flatnonzero(v)
            a = int(active[z[active].argmin()])
            score_a, w_a = sigma * z.item(a), sigma * v.item(a)
            if inner - score_a > score_s - inner and w_a < 1.0:
                g_a = b_at[a] - score_a
                d2 = wg - 2 * g_a + diag_at[a]         # ||X^T w - x_a||^2
                if d2 < 1e-12:
                    break
                gamma = min(max((inner - score_a) / d2, 0.0), w_a / (1.0 - w_a))
                grow = 1.0 + gamma
                sigma *= grow
                v[a] -= gamma / sigma
                if sigma * v[a] < 1e-15:
                    v[a] = 0.0                       # a drop step: a leaves the support
                    support -= 1
                z -= (gamma / sigma) * M[a]
                bw = grow * bw - gamma * b_at[a]
                wg = grow * grow * wg - 2 * gamma * grow * g_a + gamma * gamma * diag_at[a]
                continue
        g_s = b_at[s] - score_s                  # (G w)_s
        d2 = diag_at[s] - 2 * g_s + wg                  # ||x_s - X^T w||^2
        if d2 < 1e-12:
            break
        gamma = min(max((score_s - inner) / d2, 0.0), 1.0)
        if gamma <= 0.0:
            break                                    # the oracle would return the same vertex forever
        keep = 1.0 - gamma
        if keep < 1e-12:                             # a full step lands on the vertex s
            sigma, z = 1.0, M[s].copy()
            v[:] = 0.0
            v[s], support = 1.0, 1
            bw, wg = b_at[s], diag_at[s]
        else:
            support += v.item(s) == 0.0
            sigma *= keep
            v[s] += gamma / sigma
            z += (gamma / sigma) * M[s]
            bw = keep * bw + gamma * b_at[s]
            wg = keep * keep * wg + 2 * gamma * keep * g_s + gamma * gamma * diag_at[s]
        if sigma < 1e-200:                           # fold the scale back in before it underflows
            v *= sigma
            z *= sigma
            sigma = 1.0
        if support >= support_cap:
            break
    w = sigma * v
    w[w < 0] = 0.0
    residual = float(np.sqrt(max(tt - 2 * float(b @ w) + float(w @ G @ w), 0.0)))
    return FWResult(weights=w, residual=residual, iterations=it)
