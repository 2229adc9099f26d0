"""SIFT's greedy rule (Huebotter et al. 2025), computed incrementally.

Linear kernel k(x, x') = <x, x'>, noise variance lambda. Each step picks
    argmax_j  sum_t k_n(t, x_j)^2 / (k_n(x_j, x_j) + lambda)
over the candidates (t: the query rows) and conditions the kernel on that pick. Picks may repeat.

Instead of conditioning a (K+m)^2 matrix each step, the posterior kernel is kept in low-rank form
k_n(a, b) = k(a, b) - sum_{l<n} u_l(a) u_l(b), and only what the score needs is updated: the
diagonal k_n(x_j, x_j) and the cross terms k_n(t, x_j). One step costs O(K d + K n).
"""
import numpy as np

from hullft.selection.multiset import Multiset, check_selection_inputs
from hullft.selection.posterior import observe


def sift_picks(query_rows: np.ndarray, candidates: np.ndarray, n: int, llambda: float):
    """Ordered picks (may repeat) and the final summed posterior variance of the query rows."""
    X = candidates.astype(np.float64)
    Q = query_rows.astype(np.float64)
    K = len(X)
    points = np.vstack([X, Q])               # u vectors are kept for candidates and query rows
    U = np.zeros((n, K + len(Q)))
    diag = np.einsum("ij,ij->i", X, X)       # k_n(x_j, x_j)
    cross = Q @ X.T                          # k_n(t, x_j), (m, K)
    q_var = np.einsum("ij,ij->i", Q, Q)      # k_n(t, t)
    picks = []
    for step in range(n):
        score = (cross ** 2).sum(0) / (diag + llambda)
        i = int(np.argmax(score))
        picks.append(i)
        u = observe(points, U, step, i, llambda)   # points[i] is X[i]: candidates come first
        diag -= u[:K] ** 2
        cross -= np.outer(u[K:], u[:K])
        q_var -= u[K:] ** 2
    return picks, float(q_var.sum())


class SiftExact:
    name = "sift_exact"
    greedy = True  # its first n picks are its selection at n

    def __init__(self, llambda: float = 0.2):
        if llambda <= 0:
            raise ValueError(f"sift_exact llambda must be > 0, got {llambda}")
        self.llambda = llambda

    def select(self, query: np.ndarray, candidates: np.ndarray, n: int) -> Multiset:
        check_selection_inputs(query, candidates, n)
        picks, variance = sift_picks(query[None, :], candidates, n, self.llambda)
        return Multiset.from_picks(picks, {"posterior_variance": variance})
