"""Pool embeddings on disk: one .npy of (rows, d) in data.embedding_dtype, written a unit at a time, read in chunks.

No process keeps it mapped: pages read through a memory map count towards the process's resident memory, so a
job reranking a thousand random rows per query, or an index build reading millions of vectors, would hold every
page it touched. A job reads its candidates' rows through a map it lets go
of right after (madvise DONTNEED: the pages stay in the OS's page cache); an index build scans in chunks.
"""
from __future__ import annotations

import mmap
from pathlib import Path
from typing import Tuple

import numpy as np

READ_ROWS = 1 << 16
SPARSE = 64  # fewer rows than 1/64 of the file: read each (a query's candidates), else scan in chunks


def npy_header(dtype: np.dtype, shape: tuple) -> bytes:
    """The header of an .npy holding a C-ordered array of this dtype and shape: the rows follow it, written in
    a stream."""
    import io

    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": False, "shape": tuple(shape)})
    return out.getvalue()


class EmbeddingFile:
    """Rows of an .npy: `emb[a:b]`, `emb[rows]` (rows in any order)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran, self.dtype = read_header(f)
            self.header = f.tell()
        if fortran or len(shape) != 2:
            raise ValueError(f"{self.path.name} is not a (rows, d) C-ordered array")
        self.shape: Tuple[int, int] = shape
        self._map = self._view = None

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """The whole file (np.asarray(emb)): for tests and small spaces."""
        return self[:] if dtype is None else self[:].astype(dtype)

    def _read(self, start: int, stop: int) -> np.ndarray:
        count = (stop - start) * self.shape[1]
        offset = self.header + start * self.shape[1] * self.dtype.itemsize
        return np.fromfile(self.path, dtype=self.dtype, count=count, offset=offset).reshape(-1, self.shape[1])

    def _read_each(self, rows: np.ndarray) -> np.ndarray:
        """A few rows, in any order, through a memory map whose pages are let go again right after, so they stay
        in the OS's page cache but not in this process's resident memory."""
        if self._map is None:
            with open(self.path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._view = np.frombuffer(self._map, dtype=self.dtype, count=self.shape[0] * self.shape[1],
                                       offset=self.header).reshape(self.shape)
        out = self._view[rows]  # a copy
        self._map.madvise(mmap.MADV_DONTNEED)
        return out

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step != 1:
                raise IndexError("only contiguous slices")
            return self._read(start, max(start, stop))
        rows = np.asarray(key, dtype=np.int64)
        if len(rows) * SPARSE < self.shape[0]:
            return self._read_each(rows)
        order = np.argsort(rows, kind="stable")
        ascending, parts = rows[order], []
        for start in range(0, self.shape[0], READ_ROWS):
            mine = ascending[(ascending >= start) & (ascending < start + READ_ROWS)]
            if len(mine):
                parts.append(self._read(start, min(start + READ_ROWS, self.shape[0]))[mine - start])
        found = np.concatenate(parts) if parts else np.zeros((0, self.shape[1]), self.dtype)
        if len(found) != len(rows):
            raise IndexError(f"rows beyond the end of {self.path.name}")
        out = np.empty_like(found)
        out[order] = found
        return out
