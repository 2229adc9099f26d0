"""Uniformly random distinct candidates; the same (seed, query) always gives the same picks."""
import hashlib

import numpy as np

from hullft.selection.multiset import Multiset, check_selection_inputs


class RandomSubset:
    name = "random"
    greedy = True  # a prefix of one permutation: its first n picks are its selection at n

    def __init__(self, seed: int = 0):
        self.seed = seed

    def select(self, query: np.ndarray, candidates: np.ndarray, n: int) -> Multiset:
        check_selection_inputs(query, candidates, n)
        query_key = int.from_bytes(hashlib.sha256(np.ascontiguousarray(query).tobytes()).digest()[:8], "big")
        rng = np.random.default_rng([self.seed, query_key])
        return Multiset(rng.permutation(len(candidates))[:n], np.ones(n, dtype=np.int64))
