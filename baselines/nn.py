"""Nearest neighbours (TTT-NN): the top-n candidates by inner product, each once."""
import numpy as np

from hullft.selection.multiset import Multiset, check_selection_inputs


class NearestNeighbours:
    name = "nn"
    greedy = True  # its first n picks are its selection at n

    def select(self, query: np.ndarray, candidates: np.ndarray, n: int) -> Multiset:
        check_selection_inputs(query, candidates, n)
        scores = candidates @ query
        top = np.argsort(-scores, kind="stable")[:n]
        return Multiset(top, np.ones(n, dtype=np.int64), {"min_similarity": float(scores[top[-1]])})
