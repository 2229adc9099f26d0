"""Top-K retrieval over the pool embeddings.

The faiss index is named by `data.index`: `flat` (exact, default), `ivf`, `hnsw`, or any faiss
`index_factory` string (e.g. `IVF65536_HNSW32,PQ64`), always with inner-product metric. Trainable indexes
learn from a seeded sample of `data.index_train_size` rows; vectors are added in chunks.

Search: on a CUDA machine an exact (`flat`) search runs on the GPU as one matmul and torch.topk over the
embeddings (fp16 where fp32 would not fit), no faiss GPU build needed. Other indexes search with faiss on
the CPU, or on the GPU where the installed faiss can run there (else a one-line notice).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Tuple

import numpy as np
import torch

import faiss
from hullft.cache import file_digest, verified_digest, write_checksum
from hullft.config import DataConfig
from hullft.errors import UserError

log = logging.getLogger(__name__)
ADD_CHUNK = 1 << 16
SHORTHANDS = {"flat": lambda cfg, rows: "Flat",
              "ivf": lambda cfg, rows: f"IVF{max(1, min(cfg.ivf_nlist, rows // 39))},Flat",
              "hnsw": lambda cfg, rows: f"HNSW{cfg.hnsw_m},Flat"}


def factory_string(cfg: DataConfig, rows: int) -> str:
    name = str(cfg.index)
    return SHORTHANDS[name](cfg, rows) if name in SHORTHANDS else name


def trained_index(embeddings: np.ndarray, cfg: DataConfig) -> faiss.Index:
    """An empty index of data.index, trained on a seeded sample of the rows if it learns."""
    rows, d = embeddings.shape
    spec = factory_string(cfg, rows)
    try:
        index = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise UserError(f"data.index={cfg.index}: faiss cannot build '{spec}' for d={d} "
                        f"({str(e).strip().splitlines()[-1][:120]}); use flat, ivf, hnsw or a valid "
                        f"index_factory string") from None
    if not index.is_trained:
        pick = np.sort(np.random.default_rng(cfg.seed).choice(rows, size=min(rows, cfg.index_train_size),
                                                              replace=False))
        index.train(np.ascontiguousarray(embeddings[pick], dtype=np.float32))
    return index


def add_rows(index: faiss.Index, embeddings: np.ndarray, start: int, stop: int) -> faiss.Index:
    for begin in range(start, stop, ADD_CHUNK):
        index.add(np.ascontiguousarray(embeddings[begin:min(stop, begin + ADD_CHUNK)], dtype=np.float32))
    return index


def part_bounds(rows: int, cfg: DataConfig) -> List[Tuple[int, int]]:
    """The rows of each index file: one file, or `data.index_part_rows` rows a file (the merge then holds one
    file's codes at a time, whatever the number of rows)."""
    size = cfg.index_part_rows or max(rows, 1)
    return [(start, min(rows, start + size)) for start in range(0, max(rows, 1), size)]


def joined(parts: List[faiss.Index]) -> faiss.Index:
    """Index files searched as one, row ids following the files' order (parts trained as one share their
    quantiser, so each probes the lists the whole would)."""
    if len(parts) == 1:
        return parts[0]
    shards = faiss.IndexShards(parts[0].d, False, True)  # not threaded; ids offset by the earlier parts' rows
    for part in parts:
        shards.add_shard(part)  # faiss's Python wrapper keeps the part alive as long as the whole
    return shards


def parts_of(index: faiss.Index) -> List[faiss.Index]:
    if isinstance(index, faiss.IndexShards):
        return [faiss.downcast_index(index.at(i)) for i in range(index.count())]
    return [index]


def lists_path(index_path) -> Path:
    """Where an IVF index's lists live on disk, beside the index file."""
    return Path(index_path).with_suffix(".ivfdata")


def write_index(index: faiss.Index, path: Path, final: Path = None) -> None:
    """Write the index to path (a temporary name for `final`). An IVF index whose lists faiss can hold on disk
    (OnDiskInvertedLists: plain IVF lists; not the fast-scan `x4fs` blocks) has them written to
    lists_path(final), with its checksum, and the index file refers to that file by name, so a job maps the
    lists and reads only those its searches probe."""
    ivf = _ivf(index)
    if ivf is not None and final is not None and isinstance(faiss.downcast_InvertedLists(ivf.invlists),
                                                             faiss.ArrayInvertedLists):
        lists = lists_path(final)
        lists.unlink(missing_ok=True)
        on_disk = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(lists))
        sources = faiss.InvertedListsPtrVector()
        sources.push_back(ivf.invlists)
        on_disk.merge_from_multiple(sources.data(), 1)
        on_disk.filename = lists.name  # no folder in the index file: it is read from beside the index
        on_disk.this.disown()  # the index owns it from here
        ivf.replace_invlists(on_disk, True)
        faiss.write_index(index, str(path))
        write_checksum(lists, file_digest(lists))
        return
    faiss.write_index(index, str(path))


def _ivf(index: faiss.Index):
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def read_index(path) -> faiss.Index:
    """The index; IVF lists written on disk are memory-mapped from the file beside it (checked against its
    checksum)."""
    if lists_path(path).exists():
        verified_digest(lists_path(path))
        return faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY)
    return faiss.read_index(str(path))


class FaissSearch:
    """faiss top-K. With `data.index_rerank` = R > 0, the index's R best are rescored exactly from the
    stored embeddings and the K best of those returned: a compressed index (PQ codes) proposes,
    the stored vectors decide."""

    def __init__(self, index: faiss.Index, cfg: DataConfig, embeddings: np.ndarray = None):
        for part in parts_of(index):
            if hasattr(part, "nprobe"):
                part.nprobe = cfg.ivf_nprobe
        self.index = self._on_gpu_if_possible(index, cfg)
        self.rerank = cfg.index_rerank if embeddings is not None else 0
        self.embeddings = embeddings

    @staticmethod
    def _on_gpu_if_possible(index, cfg):
        if not (hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0):
            return index
        try:
            gpu = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
            gpu.search(np.zeros((1, index.d), np.float32), 1)
            return gpu
        except Exception as e:  # e.g. a wheel without kernels for this GPU
            log.warning("data.index=%s: faiss cannot search on this GPU (%s); searching on the CPU",
                        cfg.index, str(e).strip().splitlines()[-1][:100])
            return index

    def __call__(self, query: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        query = np.ascontiguousarray(query, dtype=np.float32)
        scores, rows = self.index.search(query[None, :], max(k, self.rerank))
        keep = rows[0] >= 0
        scores, rows = scores[0][keep], rows[0][keep]
        if self.rerank <= k:
            return scores, rows
        rows = np.sort(rows)
        exact = np.asarray(self.embeddings[rows], dtype=np.float32) @ query
        best = np.lexsort((rows, -exact))[:k]
        return exact[best], rows[best]


class TorchExactSearch:
    """Exact inner-product top-K on a GPU: the embeddings live on the device, one matmul per query."""

    def __init__(self, embeddings: np.ndarray, device: torch.device):
        free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else float("inf")
        dtype = torch.float32 if embeddings.shape[0] * embeddings.shape[1] * 4 < 0.5 * free else torch.float16
        self.device = device
        self.matrix = torch.empty(embeddings.shape, dtype=dtype, device=device)
        for start in range(0, len(embeddings), ADD_CHUNK):
            chunk = np.ascontiguousarray(embeddings[start:start + ADD_CHUNK])
            self.matrix[start:start + len(chunk)] = torch.from_numpy(chunk).to(device, dtype)

    def __call__(self, query: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        q = torch.from_numpy(np.ascontiguousarray(query)).to(self.device, self.matrix.dtype)
        scores, rows = torch.topk((self.matrix @ q).float(), min(k, len(self.matrix)))
        return scores.cpu().numpy(), rows.cpu().numpy().astype(np.int64)


def make_search(index: faiss.Index, embeddings: np.ndarray, cfg: DataConfig):
    if str(cfg.index) == "flat" and torch.cuda.is_available():
        return TorchExactSearch(embeddings, torch.device("cuda"))
    return FaissSearch(index, cfg, embeddings)


def recall_at_k(search, embeddings: np.ndarray, queries: np.ndarray, k: int) -> float:
    """Mean share of the exact top-k (brute force over the embeddings) that the search returns."""
    exact = np.zeros((len(queries), k), dtype=np.int64)
    for i, q in enumerate(queries):
        scores = np.concatenate([np.asarray(embeddings[s:s + ADD_CHUNK], np.float32) @ q
                                 for s in range(0, len(embeddings), ADD_CHUNK)])
        exact[i] = np.argsort(-scores, kind="stable")[:k]
    found = [len(set(search(q, k)[1].tolist()) & set(row.tolist())) / k for q, row in zip(queries, exact)]
    return float(np.mean(found))
