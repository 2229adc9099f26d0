"""k-means of the pool's embeddings (faiss, spherical): unit-norm centroids and each pool row's cluster.

Centroids are trained on a seeded sample of at most 256 rows per cluster (faiss's own cap), then every row is
assigned to its nearest centroid in blocks, so memory does not grow with the pool. One thread: the same bytes
in every process, whatever its thread count.
"""
from __future__ import annotations

from typing import Tuple

import faiss
import numpy as np

from hullft.errors import UserError

POINTS_PER_CENTROID = 256
BLOCK = 1 << 16
ITERATIONS = 25


class _OneThread:
    def __enter__(self):
        self.threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)

    def __exit__(self, *exc):
        faiss.omp_set_num_threads(self.threads)


def cluster_pool(embeddings, clusters: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """(centroids (clusters, d) float32 unit rows, cluster of every row (int32))."""
    rows = len(embeddings)
    if rows < clusters:
        raise UserError(f"method.experts.clusters={clusters}: the pool holds only {rows} sequences; use fewer "
                        f"clusters")
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(rows, min(rows, clusters * POINTS_PER_CENTROID), replace=False))
    x = np.ascontiguousarray(np.asarray(embeddings[sample], dtype=np.float32))
    with _OneThread():
        kmeans = faiss.Kmeans(x.shape[1], clusters, niter=ITERATIONS, seed=seed, spherical=True,
                              max_points_per_centroid=POINTS_PER_CENTROID, verbose=False)
        kmeans.train(x)
        centroids = kmeans.centroids / np.linalg.norm(kmeans.centroids, axis=1, keepdims=True)
        centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        index = faiss.IndexFlatIP(centroids.shape[1])
        index.add(centroids)
        assignment = np.empty(rows, dtype=np.int32)
        for start in range(0, rows, BLOCK):
            block = np.ascontiguousarray(np.asarray(embeddings[start:start + BLOCK], dtype=np.float32))
            assignment[start:start + len(block)] = index.search(block, 1)[1][:, 0]
    return centroids, assignment
