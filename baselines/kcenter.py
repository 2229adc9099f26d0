"""Greedy k-center: start at the 1-NN, then repeatedly add the candidate farthest from those picked."""
import numpy as np

from hullft.selection.multiset import Multiset, check_selection_inputs


class KCenter:
    name = "kcenter"
    greedy = True  # its first n picks are its selection at n

    def select(self, query: np.ndarray, candidates: np.ndarray, n: int) -> Multiset:
        check_selection_inputs(query, candidates, n)
        first = int(np.argmax(candidates @ query))
        order = [first]
        # squared distance between unit vectors: 2 - 2 <x, y>
        nearest = 2.0 - 2.0 * (candidates @ candidates[first])
        nearest[first] = -np.inf
        for _ in range(n - 1):
            j = int(np.argmax(nearest))
            order.append(j)
            nearest = np.minimum(nearest, 2.0 - 2.0 * (candidates @ candidates[j]))
            nearest[order] = -np.inf
        return Multiset(np.array(order), np.ones(n, dtype=np.int64),
                        {"covering_radius": float(np.sqrt(max(nearest.max(), 0.0)))})
