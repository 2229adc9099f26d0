"""Per-query result records: appended durably as each query finishes, so a killed job resumes where it stopped.

Each record is one JSON line in records.jsonl (flushed and fsynced); records.parquet is rewritten
atomically from it after every query. A torn last line (a kill mid-write) is ignored on resume.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List

import pandas as pd

from hullft.cache import atomic_path

COLUMNS = ["query_id", "domain", "selector", "n", "k", "refresh_interval", "distinct", "fwd_bwd", "opt_steps",
           "bpb_base", "bpb", "bpb_pct", "t_retrieve", "t_select", "t_finetune", "t_eval", "t_total",
           "diverged", "model", "config_hash", "git_sha", "device"]


class RecordStore:
    def __init__(self, out_dir: Path, config_hash: str):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.dir / "records.jsonl"
        self.parquet = self.dir / "records.parquet"
        self.config_hash = config_hash
        self.rows: List[Dict] = self._load()

    def _load(self) -> List[Dict]:
        if not self.jsonl.exists():
            return []
        rows, valid_bytes = [], 0
        with open(self.jsonl, "rb") as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # torn write from a kill: drop it and everything after
                valid_bytes += len(line)
        with open(self.jsonl, "r+b") as f:
            f.truncate(valid_bytes)
        hashes = {r["config_hash"] for r in rows}
        if hashes - {self.config_hash}:
            raise RuntimeError(f"{self.dir} holds records of another config ({sorted(hashes)[0]}); "
                               f"delete that directory or run with a different tag=... to start afresh")
        return rows

    @property
    def done(self) -> set:
        return {r["query_id"] for r in self.rows}

    def append(self, record: Dict) -> None:
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
