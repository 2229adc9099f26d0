"""Per-query result records: appended durably as each query finishes, so a killed job resumes where it stopped.

Each record is one JSON line in records.jsonl (flushed and fsynced); records.parquet is rewritten
atomically from it after every query. A torn last line (a kill mid-write) is ignored on resume.

A record is identified by what it measured: the config's hash and the `data_key` (the data space's content
and the model's weights). A directory holding records of another config, or of the same config over other
data (a corpus edited in place, another tokenizer or embedder), is refused before anything is written to it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List

import pandas as pd

from hullft.cache import atomic_path
from hullft.errors import UserError

class RecordsOfAnotherRun(UserError):
    pass


COLUMNS = ["query_id", "domain", "selector", "n", "budget", "pass_budget", "final", "alpha", "sigma", "k", "refresh_interval", "distinct", "fwd_bwd", "opt_steps",
           "bpb_base", "bpb", "bpb_pct", "t_retrieve", "t_select", "t_finetune", "t_eval", "t_total",
           "diverged", "model", "config_hash", "data_key", "git_sha", "device"]


class RecordStore:
    def __init__(self, out_dir: Path, config_hash: str):
        self.dir = Path(out_dir)
        self.jsonl = self.dir / "records.jsonl"
        self.parquet = self.dir / "records.parquet"
        self.config_hash = config_hash
        self.data_key = None
        self.valid_bytes = None  # where a torn last line starts; cut off at the first append
        self.rows: List[Dict] = self._load()

    def _load(self) -> List[Dict]:
        if not self.jsonl.exists():
            return []
        rows, offset, valid_bytes, complete = [], 0, 0, 0
        with open(self.jsonl, "rb") as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # torn write from a kill: drop it and everything after
                offset += len(line)
                if rows[-1].get("final", True):  # a query's records end with its final one
                    valid_bytes, complete = offset, len(rows)
        rows = rows[:complete]  # the checkpoint records of a query killed before its end are redone
        self.valid_bytes = valid_bytes
        hashes = {r.get("config_hash") for r in rows}
        if hashes - {self.config_hash}:
            raise RecordsOfAnotherRun(f"{self.dir} holds records of another config ({sorted(map(str, hashes))[0]}); "
                                      f"delete that directory or run with a different tag=... to start afresh")
        return rows

    def claim(self, data_key: str) -> None:
        """Resume only records measured on this data space and model; refuse a directory holding others."""
        keys = {r.get("data_key") for r in self.rows}
        if keys - {data_key}:
            raise RecordsOfAnotherRun(
                f"{self.dir} holds records of this config measured on other data (data_key "
                f"{sorted(map(str, keys - {data_key}))[0]}, now {data_key}): the corpus, tokenizer, embedder or "
                f"model changed; delete that directory or run with a different tag=... to measure afresh")
        self.data_key = data_key

    @property
    def done(self) -> set:
        return {r["query_id"] for r in self.rows}

    def append(self, record: Dict) -> None:
        if self.data_key is None or record.get("data_key") != self.data_key:
            raise RuntimeError("RecordStore.append: claim(data_key) first and put data_key in every record")
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.valid_bytes is not None:
            with open(self.jsonl, "r+b") as f:
                f.truncate(self.valid_bytes)
            self.valid_bytes = None
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows.append(record)
        self.write_parquet()

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.rows)
        return df if len(df) else pd.DataFrame(columns=COLUMNS)

    def write_parquet(self) -> None:
        with atomic_path(self.parquet) as tmp:
            self.frame().to_parquet(tmp, index=False)
