"""Pool sequences as one flat token array plus a memory-mapped table (the Megatron/nanoGPT layout).

    tokens-<key>.bin        every sequence's tokens back to back, uint16 where the vocabulary fits, else uint32
    pooltable-<key>.npy     one row per sequence: domain code, length, offset (POOL_TABLE_DTYPE, 14 bytes)
    pool-<key>.parquet      one row per sequence: domain, doc_id, start, offset, length (read on demand)

A query reads only the rows it trains on: the table is memory-mapped and a sequence's tokens are read with one
positioned read (not through a map, whose pages, and the kernel's fault-around pages beside them, would stay in
the job's resident memory: ~330 MB after 4,000 random rows of a 1M-row store). A pool of millions of sequences
costs a job RAM for the pages it reads, not ~100 bytes per token nor a table.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Sequence

import numpy as np

POOL_TABLE_DTYPE = np.dtype([("domain", "<u2"), ("length", "<u4"), ("offset", "<i8")])


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


class TokenStore:
    def __init__(self, tokens_path: Path, table_path: Path, domain_names: Sequence[str], dtype: np.dtype):
        table = np.load(table_path, mmap_mode="r")
        if table.dtype != POOL_TABLE_DTYPE or table.ndim != 1:
            raise ValueError(f"{Path(table_path).name} is not a pool table")
        self.offsets, self.lengths, self.codes = table["offset"], table["length"], table["domain"]
        total = int(self.offsets[-1] + self.lengths[-1]) if len(table) else 0
        expected = total * np.dtype(dtype).itemsize
        if Path(tokens_path).stat().st_size != expected:
            raise ValueError(f"{Path(tokens_path).name} holds {Path(tokens_path).stat().st_size} bytes, "
                             f"the table needs {expected}")
        self.path, self.dtype = Path(tokens_path), np.dtype(dtype)
        self.domain_names = np.asarray(list(domain_names), dtype=object)

    def __len__(self) -> int:
        return len(self.offsets)

    def domains(self, rows) -> np.ndarray:
        """The domain names of these rows."""
        return self.domain_names[np.asarray(self.codes[np.asarray(rows)], dtype=np.int64)]

    def tokens(self, row: int) -> List[int]:
        size = self.dtype.itemsize
        with open(self.path, "rb", buffering=0) as f:
            data = os.pread(f.fileno(), int(self.lengths[row]) * size, int(self.offsets[row]) * size)
        return np.frombuffer(data, dtype=self.dtype).astype(np.int64).tolist()
