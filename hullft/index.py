"""faiss inner-product index over the pool embeddings: flat (exact, default), IVF or HNSW; GPU when faiss has one."""
from __future__ import annotations

import numpy as np

import faiss
from hullft.config import DataConfig, IndexKind


def build_index(embeddings: np.ndarray, cfg: DataConfig) -> faiss.Index:
    d = embeddings.shape[1]
    if cfg.index == IndexKind.flat:
        index = faiss.IndexFlatIP(d)
    elif cfg.index == IndexKind.ivf:
        nlist = max(1, min(cfg.ivf_nlist, len(embeddings) // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(embeddings)
    else:
        index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.add(embeddings)
    return index


def prepare_for_search(index: faiss.Index, cfg: DataConfig) -> faiss.Index:
    """Set search-time knobs, and move a flat index to the GPU where this faiss build has one."""
    if cfg.index == IndexKind.ivf:
        index.nprobe = cfg.ivf_nprobe
    if cfg.index == IndexKind.flat and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    return index


def top_k(index: faiss.Index, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Inner-product scores and pool rows of the k nearest, for one (d,) query."""
    scores, rows = index.search(np.ascontiguousarray(query[None, :], dtype=np.float32), k)
    keep = rows[0] >= 0
    return scores[0][keep], rows[0][keep]
