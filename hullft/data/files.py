"""Where the data space's files live and how each is written: atomically, with its checksum beside it, and read
back only if that checksum still holds (a damaged file is built again)."""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from hullft.cache import atomic_path, cache_root, file_digest, verified_digest, write_checksum


def root() -> Path:
    return cache_root() / "dataspace"


def intact(path: Path, load: Callable = lambda path: None):
    """(load(path), digest) if the file is there, its checksum holds and `load`'s checks pass; else None, having
    said why if the file was there (truncated, corrupt or tampered: the caller builds it again)."""
    if not path.exists():
        return None
    try:
        digest = verified_digest(path)
        return load(path), digest
    except Exception as e:  # noqa: BLE001 - any failure to read it back means: build it again
        print(f"cache file {path} is damaged ({str(e).splitlines()[0]}); rebuilding it", file=sys.stderr)
        return None


def cached(path: Path, build: Callable, save: Callable, load: Callable):
    """(value, digest): path loaded if intact; otherwise built, saved atomically with its checksum, and
    returned."""
    found = intact(path, load)
    if found is not None:
        return found
    value = build()
    with atomic_path(path) as tmp:
        save(value, tmp)
        digest = file_digest(tmp)
    write_checksum(path, digest)
    return value, digest


def save_parquet(df: pd.DataFrame, path: Path) -> None:
    df.to_parquet(path, index=False)


def save_npy(arr: np.ndarray, path: Path) -> None:
    with open(path, "wb") as f:
        np.save(f, arr)


def save_json(obj, path: Path) -> None:
    path.write_text(json.dumps(obj, sort_keys=True))


def load_json(path: Path):
    return json.loads(path.read_text())


class RowGroupWriter:
    """A parquet file in row groups of `rows` rows, whatever sizes its tables come in: a reader parses every row
    group's metadata when it opens a file, so many small groups would make each open cost more as the corpus
    grows. Tables are cast to the first one's schema (or `schema`)."""

    def __init__(self, path: Path, rows: int, schema: Optional[pa.Schema] = None):
        self.path, self.rows, self.pending, self.schema = path, rows, [], schema
        self.writer = pq.ParquetWriter(path, schema) if schema is not None else None

    def write(self, table: pa.Table) -> None:
        if self.writer is None:
            self.schema, self.writer = table.schema, pq.ParquetWriter(self.path, table.schema)
        self.pending.append(table.cast(self.schema))
        if sum(t.num_rows for t in self.pending) >= self.rows:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        table = pa.concat_tables(self.pending)
        full = table.num_rows if final else table.num_rows - table.num_rows % self.rows
        if full:
            self.writer.write_table(table.slice(0, full), row_group_size=self.rows)
        self.pending = [table.slice(full)]

    def close(self) -> bool:
        """Write what is left; whether anything (a schema at least) was written."""
        if self.writer is None:
            return False
        self._flush(final=True)
        self.writer.close()
        return True


@contextmanager
def one_builder(lock_name: str, what: str):
    """Held while this process builds or repairs `what` under the data-space root: N workers started together on
    an empty cache build it once, the others waiting (and saying so) until it is there."""
    root().mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(root() / lock_name))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"{what} is being built by another process; waiting for it", file=sys.stderr)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
