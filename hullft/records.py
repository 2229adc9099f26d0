"""Per-query result records, shared safely by any number of workers on one output directory.

Each record is one line of strict JSON in records.jsonl (`null` for a missing value; files from before, with
`NaN`, still load). A query's records (its checkpoints, then its final record) are appended in one write,
flushed and fsynced, under `records.lock` (a `filelock` lock, held for milliseconds). records.parquet is written
atomically from the whole file when a job ends or stops, holding every worker's records; the report reads
records.jsonl where it is newer. A torn tail (a kill mid-write) is cut off before the next append; a query
without its final record is not done.

A record is identified by what it measured: the config's hash and the `data_key` (the data space's content
and the model's weights). A directory holding records of another config, or of the same config over other
data (a corpus edited in place, another tokenizer or embedder), is refused before anything is written to it.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import pandas as pd
from filelock import FileLock

from hullft.cache import atomic_path
from hullft.errors import UserError
from hullft.signals import uninterrupted


class RecordsOfAnotherRun(UserError):
    pass


# The columns every records file has, with their types (an empty result is written with them, so it reads back).
COLUMNS = {"query_id": "string", "domain": "string", "method": "string", "selector": "string", "n": "int64",
           "budget": "int64", "pass_budget": "int64", "final": "bool", "alpha": "float64", "sigma": "float64",
           "k": "int64", "refresh_interval": "int64", "distinct": "int64", "fwd_bwd": "int64", "opt_steps": "int64",
           "bpb_base": "float64", "bpb": "float64", "bpb_pct": "float64", "t_retrieve": "float64",
           "t_select": "float64", "t_finetune": "float64", "t_eval": "float64", "t_total": "float64",
           "diverged": "bool", "model": "string", "config_hash": "string", "data_key": "string",
           "git_sha": "string", "device": "string", "cpu": "string", "dtype": "string",
           "compiled": "bool", "sparse_embedding_grad": "bool"}


def strict_json(record: Dict) -> str:
    """One line of JSON that strict parsers accept: NaN and infinities become null."""
    clean = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
    return json.dumps(clean, allow_nan=False)


def nan_for_null(row: Dict) -> Dict:
    return {k: math.nan if v is None else v for k, v in row.items()}


def parse_lines(data: bytes) -> Tuple[List[Dict], int]:
    """The records of complete queries, and the byte offset where they end (a torn or unfinished tail after it:
    a kill mid-write, or a query's checkpoint records without its final one). null reads back as NaN."""
    rows, offset, valid_bytes, complete = [], 0, 0, 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        rows.append(nan_for_null(row))
        offset += len(line)
        if rows[-1].get("final", True):  # a query's records end with its final one
            valid_bytes, complete = offset, len(rows)
    return rows[:complete], valid_bytes


def read_jsonl(path: Path) -> pd.DataFrame:
    return records_frame(parse_lines(Path(path).read_bytes())[0])


def records_frame(rows: Sequence[Dict]) -> pd.DataFrame:
    if rows:
        return pd.DataFrame(list(rows))
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in COLUMNS.items()})


class RecordStore:
    """The directory's records, read incrementally: each refresh parses only the bytes appended since the last one
    (a file that shrank or was replaced is read again whole), so an append costs the same at 10^5 records as at 10."""

    def __init__(self, out_dir: Path, config_hash: str):
        self.dir = Path(out_dir)
        self.jsonl = self.dir / "records.jsonl"
        self.parquet = self.dir / "records.parquet"
        self.lock = FileLock(str(self.dir / "records.lock"))
        self.config_hash = config_hash
        self.data_key = None
        self.rows: List[Dict] = []
        self.done: set = set()
        self._offset, self._file = 0, None  # bytes parsed so far, and the (device, inode) they belong to
        self._read()

    def _read(self) -> int:
        """Parse what was appended since the last read; returns where the complete queries end (a torn or
        unfinished tail may follow). Refuses records of another config or of other data."""
        try:
            stat = self.jsonl.stat()
        except FileNotFoundError:
            self.rows, self.done, self._offset, self._file = [], set(), 0, None
            return 0
        if (stat.st_dev, stat.st_ino) != self._file or stat.st_size < self._offset:
            self.rows, self.done, self._offset, self._file = [], set(), 0, (stat.st_dev, stat.st_ino)
        if stat.st_size > self._offset:
            with open(self.jsonl, "rb") as f:
                f.seek(self._offset)
                new, valid_bytes = parse_lines(f.read())
            self._check(new)
            self.rows += new
            self.done.update(r["query_id"] for r in new)
            self._offset += valid_bytes
        return self._offset

    def _check(self, rows: List[Dict]) -> None:
        hashes = {r.get("config_hash") for r in rows}
        if hashes - {self.config_hash}:
            raise RecordsOfAnotherRun(f"{self.dir} holds records of another config ({sorted(map(str, hashes))[0]}); "
                                      f"delete that directory or run with a different tag=... to start afresh")
        keys = {r.get("data_key") for r in rows}
        if self.data_key is not None and keys - {self.data_key}:
            raise RecordsOfAnotherRun(
                f"{self.dir} holds records of this config measured on other data (data_key "
                f"{sorted(map(str, keys - {self.data_key}))[0]}, now {self.data_key}): the corpus, tokenizer, "
                f"embedder or model changed; delete that directory or run with a different tag=... to measure afresh")

    def accept_data(self, data_key: str) -> None:
        """Resume only records measured on this data space and model; refuse a directory holding others."""
        self.data_key = data_key
        self._check(self.rows)
        self._read()

    def refresh(self) -> None:
        """Every worker's records so far (call under the lock)."""
        self._read()

    def append_query(self, records: Sequence[Dict]) -> bool:
        """A query's records in one durable write, after cutting off a torn tail. False (nothing written) where
        another worker has recorded the query meanwhile. records.parquet is written by write_parquet (at the
        end of a job, or when it stops), not per query."""
        if self.data_key is None or any(r.get("data_key") != self.data_key for r in records):
            raise RuntimeError("RecordStore.append_query: accept_data(data_key) first and put it in every record")
        self.dir.mkdir(parents=True, exist_ok=True)
        with uninterrupted(), self.lock:
            valid_bytes = self._read()
            if records[0]["query_id"] in self.done:
                return False
            if self.jsonl.exists() and self.jsonl.stat().st_size > valid_bytes:
                with open(self.jsonl, "r+b") as f:
                    f.truncate(valid_bytes)
            lines = "".join(strict_json(r) + "\n" for r in records).encode()
            with open(self.jsonl, "ab") as f:
                f.write(lines)
                f.flush()
                os.fsync(f.fileno())
            self._read()  # exactly the lines just written, as they read back
        return True

    def frame(self) -> pd.DataFrame:
        return records_frame(self.rows)

    def write_parquet(self) -> None:
        """records.parquet from every worker's records: also where nothing was left to do (a kill between the
        jsonl and parquet writes), and as a valid empty table where this job has no queries."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with uninterrupted(), self.lock:
            self.refresh()
            self._write_parquet()

    def _write_parquet(self) -> None:
        with atomic_path(self.parquet) as tmp:
            self.frame().to_parquet(tmp, index=False)
