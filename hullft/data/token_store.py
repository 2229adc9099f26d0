"""Pool sequences as one flat, memory-mapped token array plus a small table (the Megatron/nanoGPT layout).

    tokens-<key>.bin        every sequence's tokens back to back, uint16 where the vocabulary fits, else uint32
    pool-<key>.parquet      one row per sequence: domain, doc_id, start, offset, length

A query reads only the rows it trains on: the array stays on disk and the OS pages in what is touched, so a
pool of millions of sequences costs RAM for its table alone (~40 bytes a row), not ~100 bytes per token.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import pandas as pd


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


class TokenFileWriter:
    """A token file of a known size, filled sequence by sequence at each one's offset (in tokens): sequences
    arrive in any order (a unit at a time) and memory holds only the one being written."""

    def __init__(self, path: Path, total_tokens: int, dtype: np.dtype):
        self.dtype, self.file = np.dtype(dtype), open(path, "wb")
        self.file.truncate(total_tokens * self.dtype.itemsize)

    def put(self, offset: int, tokens: np.ndarray) -> None:
        if len(tokens) and (tokens.min() < 0 or tokens.max() > np.iinfo(self.dtype).max):
            raise ValueError(f"token ids out of range for {self.dtype}")
        self.file.seek(int(offset) * self.dtype.itemsize)
        self.file.write(np.asarray(tokens).astype(self.dtype).tobytes())

    def __enter__(self) -> "TokenFileWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


def with_offsets(table: pd.DataFrame, lengths: np.ndarray) -> pd.DataFrame:
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return table.assign(offset=offsets, length=lengths.astype(np.int64))


class TokenStore:
    def __init__(self, tokens_path: Path, table: pd.DataFrame, dtype: np.dtype):
        self.table = table.reset_index(drop=True)
        total = int(self.table.length.sum()) if len(self.table) else 0
        expected = total * np.dtype(dtype).itemsize
        if Path(tokens_path).stat().st_size != expected:
            raise ValueError(f"{Path(tokens_path).name} holds {Path(tokens_path).stat().st_size} bytes, "
                             f"the table needs {expected}")
        self.flat = np.memmap(tokens_path, dtype=dtype, mode="r", shape=(total,)) if total else np.zeros(0, dtype)
        self.offsets = self.table.offset.to_numpy(np.int64)
        self.lengths = self.table.length.to_numpy(np.int64)
        self.domains = self.table.domain.array  # categorical in a job: a byte a row

    def __len__(self) -> int:
        return len(self.table)

    def tokens(self, row: int) -> List[int]:
        start = self.offsets[row]
        return self.flat[start:start + self.lengths[row]].astype(np.int64).tolist()
