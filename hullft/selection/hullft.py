"""HullFT: the query as a sparse convex combination of candidates, integerized into a multiset of size n."""
from __future__ import annotations

from typing import Optional

import numpy as np

from hullft.selection.frank_wolfe import frank_wolfe, gram_form
from hullft.selection.integerize import geometric_integerize, integer_loss, largest_remainder
from hullft.selection.multiset import Multiset, check_selection_inputs


class HullFT:
    name = "hullft"
    greedy = False  # its n-multiset is not the first n elements of its (n+1)-multiset

    def __init__(self, integerize: str = "geometric", swap_passes: int = 2, max_iter: int = 250,
                 tol: float = 1e-5, support_cap: Optional[int] = None, away_steps: bool = False):
        if integerize not in ("geometric", "largest_remainder"):
            raise ValueError(f"integerize must be 'geometric' or 'largest_remainder', got '{integerize}'")
        self.integerize = integerize
        self.swap_passes = swap_passes
        self.max_iter = max_iter
        self.tol = tol
        self.support_cap = support_cap
        self.away_steps = away_steps
        self.select(np.array([1.0, 0.0], np.float32), np.eye(2, dtype=np.float32), 1)  # compile numba loops now

    def select(self, query: np.ndarray, candidates: np.ndarray, n: int) -> Multiset:
        check_selection_inputs(query, candidates, n)
        cap = min(self.support_cap or n, n)
        G, b, tt = gram = gram_form(candidates, query)
        fw = frank_wolfe(candidates, query, support_cap=cap, max_iter=self.max_iter, tol=self.tol,
                         away_steps=self.away_steps, gram=gram)
        support = np.flatnonzero(fw.weights > 0)
        support = support[np.argsort(-fw.weights[support], kind="stable")][:cap]
        weights = fw.weights[support]
        G_support, b_support = G[np.ix_(support, support)], b[support]
        if self.integerize == "geometric":
            counts, loss = geometric_integerize(G_support, b_support, tt, weights, n, self.swap_passes)
        else:
            counts = largest_remainder(weights, n)
            loss = integer_loss(counts, G_support, b_support, tt, n)
        keep = counts > 0
        return Multiset(support[keep], counts[keep], {
            "fw_residual": fw.residual, "fw_iters": fw.iterations, "support": len(support),
            "integer_residual": float(np.sqrt(max(loss, 0.0)))})
