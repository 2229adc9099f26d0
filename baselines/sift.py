"""SIFT through the activeft library (0.1.1), wrapped so its rough edges never reach users.

Per call: a fresh inner-product index over the K candidates and a fresh exact VTL (fast=False), one query,
threads=1 (batch_search with threads > 1 races), K passed explicitly, activeft's own wandb logging
silenced, and faiss's global thread count restored afterwards.

activeft feeds the candidates to its greedy loop through a torch DataLoader with shuffle=True, drawn from
torch's global generator, and at a tie (exact or near duplicates) the pick goes to whichever comes first in that
shuffled order. Unseeded, its picks at a tie change from call to call (and with whatever drew from the
generator before: a training step), so its selection at n=2 need not be the first 2 picks at n=8. Each call
here draws the shuffle from a generator seeded with `shuffle_seed`, leaving the global one untouched: the
same candidates give the same picks, and the picks at n are the first n picks at any larger N.
"""
from contextlib import contextmanager

import numpy as np
import torch

import faiss  # activeft imports faiss at import time
from hullft.models import resolve_device
from hullft.selection.multiset import Multiset, check_selection_inputs


@contextmanager
def _quiet_activeft():
    """Silence activeft's wandb_log in every acquisition module and restore faiss's OpenMP threads."""
    import activeft.acquisition_functions as af
    import activeft.utils as au

    modules = [au] + [m for name, m in vars(af).items() if hasattr(m, "wandb_log") and hasattr(m, "__file__")]
    saved = [(m, m.wandb_log) for m in modules]
    threads = faiss.omp_get_max_threads()
    for m, _ in saved:
        m.wandb_log = lambda data: None
    try:
        yield
    finally:
        for m, fn in saved:
            m.wandb_log = fn
        faiss.omp_set_num_threads(threads)


class SIFT:
    name = "sift"
    greedy = True  # its first n picks are its selection at n

    def __init__(self, llambda: float = 0.2, also_query_opposite: bool = False, device: str = "auto",
                 shuffle_seed: int = 0):
        if llambda <= 0:
            raise ValueError(f"sift llambda must be > 0, got {llambda}")
        self.llambda = llambda
        self.also_query_opposite = also_query_opposite
        self.device = resolve_device(device)  # auto: CUDA where present (activeft computes with torch)
        self.shuffle_seed = shuffle_seed

    def select(self, query: np.ndarray, candidates: np.ndarray, n: int) -> Multiset:
        check_selection_inputs(query, candidates, n)
        values, picks = self.search(query, candidates, n)
        return Multiset.from_picks(picks, {"top_value": float(np.max(values))})

    def search(self, query: np.ndarray, candidates: np.ndarray, n: int):
        """activeft's (values, picks) for one query: values[i] = -sigma^2 after the first i + 1 picks."""
        from activeft.acquisition_functions.vtl import VTL
        from activeft.sift import Retriever

        K, d = candidates.shape
        index = faiss.IndexFlatIP(d)
        index.add(np.ascontiguousarray(candidates, dtype=np.float32))
        vtl = VTL(target=torch.Tensor(), num_workers=1, subsample=False, force_nonsequential=False,
                  noise_std=float(np.sqrt(self.llambda)), mini_batch_size=max(1000, 2 * max(K, n) + 2))
        retriever = Retriever(index, acquisition_function=vtl, also_query_opposite=self.also_query_opposite,
                              device=self.device)
        with _quiet_activeft(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.shuffle_seed)
            values, picks, _, _ = retriever.search(np.ascontiguousarray(query[None, :], dtype=np.float32),
                                                   N=n, K=K, threads=1)
        return np.asarray(values, dtype=np.float64).ravel(), np.asarray(picks).ravel()
