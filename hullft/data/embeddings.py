"""Pool embeddings on disk: one .npy of (rows, d) in data.embedding_dtype, written row by row, read in chunks.

Jobs memory-map the file and read only their candidates' rows. Building an index reads it through plain
file reads instead: pages read through a memory map count towards the process's resident memory, and an
index over millions of vectors would otherwise hold them all.
"""
from __future__ import annotations

from pathlib import Path
from typing import Tuple

import numpy as np

READ_ROWS = 1 << 16


class EmbeddingFileWriter:
    """An .npy of a known shape, filled row by row at each row's position (rows arrive a unit at a time)."""

    def __init__(self, path: Path, rows: int, dim: int, dtype: np.dtype):
        self.dtype, self.dim, self.file = np.dtype(dtype), dim, open(path, "wb")
        np.lib.format.write_array_header_1_0(self.file, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                         "fortran_order": False, "shape": (rows, dim)})
        self.header = self.file.tell()
        self.file.truncate(self.header + rows * dim * self.dtype.itemsize)

    def put(self, position: int, vector: np.ndarray) -> None:
        self.file.seek(self.header + int(position) * self.dim * self.dtype.itemsize)
        self.file.write(np.asarray(vector, dtype=self.dtype).tobytes())

    def __enter__(self) -> "EmbeddingFileWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


class EmbeddingFile:
    """Rows of an .npy read with file reads, not a memory map: `emb[a:b]` and `emb[sorted rows]`."""

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

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, start: int, stop: int) -> np.ndarray:
        count = (stop - start) * self.shape[1]
        offset = self.header + start * self.shape[1] * self.dtype.itemsize
        return np.fromfile(self.path, dtype=self.dtype, count=count, offset=offset).reshape(-1, self.shape[1])

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step != 1:
                raise IndexError("only contiguous slices")
            return self._read(start, max(start, stop))
        rows = np.asarray(key, dtype=np.int64)
        if np.any(np.diff(rows) < 0):
            raise IndexError("rows must be ascending")
        out = []
        for start in range(0, self.shape[0], READ_ROWS):
            mine = rows[(rows >= start) & (rows < start + READ_ROWS)]
            if len(mine):
                out.append(self._read(start, min(start + READ_ROWS, self.shape[0]))[mine - start])
        return np.concatenate(out) if out else np.zeros((0, self.shape[1]), self.dtype)
