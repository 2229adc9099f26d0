"""Uncertainty sampling (US), the classic active-learning rule: greedily pick the candidate of largest
posterior variance k_n(x, x) given the picks so far, under SIFT's surrogate (linear kernel, noise lambda;
hullft/selection/posterior.py). Diversity only: relevance comes from the faiss pre-selection alone. Ties go to the
candidate nearest the query (so the first pick among unit rows is the nearest neighbour). Picks may repeat."""
import numpy as np

from hullft.selection.multiset import Multiset, check_selection_inputs
from hullft.selection.posterior import observe

TIE = 1e-6  # float32 unit rows differ in norm by ~1e-7: variances that close are ties


def us_picks(query: np.ndarray, candidates: np.ndarray, n: int, llambda: float) -> list:
    X = candidates.astype(np.float64)
    similarity = X @ query.astype(np.float64)
    variance = np.einsum("ij,ij->i", X, X)   # k_n(x_j, x_j)
    U = np.zeros((n, len(X)))
    picks = []
    for step in range(n):
        tied = np.flatnonzero(variance >= variance.max() - TIE)
        i = int(tied[np.argmax(similarity[tied])])
        picks.append(i)
        variance -= observe(X, U, step, i, llambda) ** 2
    return picks


class UncertaintySampling:
    name = "us"
    greedy = True  # its first n picks are its selection at n

    def __init__(self, llambda: float = 0.2):
        if llambda <= 0:
            raise ValueError(f"us llambda must be > 0, got {llambda}")
        self.llambda = llambda

    def select(self, query: np.ndarray, candidates: np.ndarray, n: int) -> Multiset:
        check_selection_inputs(query, candidates, n)
        return Multiset.from_picks(us_picks(query, candidates, n, self.llambda))
