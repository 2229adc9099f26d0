"""The contract between selectors and the engine: a selector returns a Multiset of candidate rows.

    multiset = selector.select(query, candidates, n)

`query` (d,) and `candidates` (K, d) are float32 and L2-normalised; the result names distinct candidate
rows (`indices`) with multiplicities (`counts`, each >= 1) that sum to exactly n.

A selector declares `greedy = True` when its first m picks are its selection at m (nn, sift, us, ...): the
runner may then select once at the budget and truncate (adaptive budgets, checkpoints). Its pick order is
`picks`, or for distinct picks the order of `indices`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np


@dataclass
class Multiset:
    indices: np.ndarray  # int64, distinct rows of `candidates`
    counts: np.ndarray   # int64, each >= 1, sum == n
    diagnostics: Dict[str, float] = field(default_factory=dict)
    picks: Optional[np.ndarray] = None  # positions into `indices` in the order they were picked, if ordered

    def __post_init__(self):
        self.indices = np.asarray(self.indices, dtype=np.int64)
        self.counts = np.asarray(self.counts, dtype=np.int64)
        if self.indices.shape != self.counts.shape or len(np.unique(self.indices)) != len(self.indices):
            raise ValueError("Multiset needs distinct indices and one count per index")
        if (self.counts < 1).any():
            raise ValueError("Multiset counts must each be >= 1")

    @property
    def size(self) -> int:
        return int(self.counts.sum())

    def ordered_rows(self) -> np.ndarray:
        """The selected candidate rows, one per element, in pick order where known."""
        if self.picks is not None:
            return self.indices[self.picks]
        return np.repeat(self.indices, self.counts)

    @classmethod
    def from_picks(cls, picks, diagnostics=None) -> "Multiset":
        """Multiset from a sequence of (possibly repeated) picks, in order of first pick."""
        picks = np.asarray(picks, dtype=np.int64)
        uniq, first, counts = np.unique(picks, return_index=True, return_counts=True)
        order = np.argsort(first, kind="stable")
        position = np.empty(len(uniq), dtype=np.int64)
        position[order] = np.arange(len(uniq))
        return cls(uniq[order], counts[order], diagnostics or {}, picks=position[np.searchsorted(uniq, picks)])


def check_selection_inputs(query: np.ndarray, candidates: np.ndarray, n: int, atol: float = 1e-3) -> None:
    """One-line ValueErrors for what the contract forbids."""
    if not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"budget n must be a positive integer, got {n!r}")
    if query.ndim != 1 or candidates.ndim != 2:
        raise ValueError(f"query must be (d,) and candidates (K, d); got {query.shape} and {candidates.shape}")
    if candidates.shape[1] != query.shape[0]:
        raise ValueError(f"dimension mismatch: query has d={query.shape[0]}, candidates d={candidates.shape[1]}")
    if len(candidates) < n:
        raise ValueError(f"K={len(candidates)} candidates is fewer than the budget n={n}; raise k or lower budget")
    # one pass over the candidates: a NaN or inf anywhere makes its row's squared norm non-finite
    squared = np.einsum("ij,ij->i", candidates, candidates)
    query_squared = float(query @ query)
    if not (np.isfinite(squared).all() and np.isfinite(query_squared)):
        raise ValueError("query or candidates contain NaN or inf")
    if abs(np.sqrt(query_squared) - 1) > atol or np.abs(np.sqrt(squared) - 1).max() > atol:
        raise ValueError("query and candidates must be L2-normalised (unit rows)")
