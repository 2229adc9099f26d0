"""Maximal marginal relevance: trade relevance to the query against similarity to what is already picked."""
import numpy as np

from hullft.selection.multiset import Multiset, check_selection_inputs


class MMR:
    name = "mmr"
    greedy = True  # its first n picks are its selection at n

    def __init__(self, trade_off: float = 0.5):
        if not 0.0 <= trade_off <= 1.0:
            raise ValueError(f"mmr trade_off must lie in [0, 1], got {trade_off}")
        self.trade_off = trade_off

    def select(self, query: np.ndarray, candidates: np.ndarray, n: int) -> Multiset:
        check_selection_inputs(query, candidates, n)
        relevance = candidates @ query
        redundancy = np.full(len(candidates), -np.inf)
        picked = np.zeros(len(candidates), dtype=bool)
        order = []
        for _ in range(n):
            score = self.trade_off * relevance - (1 - self.trade_off) * (redundancy if order else 0.0)
            score[picked] = -np.inf
            j = int(np.argmax(score))
            order.append(j)
            picked[j] = True
            redundancy = np.maximum(redundancy, candidates @ candidates[j])
        return Multiset(np.array(order), np.ones(n, dtype=np.int64))
