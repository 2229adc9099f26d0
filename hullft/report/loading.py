"""The records of runs, multiruns, shards and workers, read into one frame, each tagged with its configuration.

Records are grouped by `setting`: `n=8` for a fixed budget, `alpha=0.5 n<=20` for an adaptive one (placed on the
front at its mean time and mean BPB%; its `n` column is the mean chosen n, and a query on which the rule chose no
step stays in that point at n = 0: it is never an anchor such as `none`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from pyarrow import ArrowException

from hullft.errors import UserError
from hullft.records import read_jsonl
from hullft.report.configurations import with_configurations

REQUIRED = ["query_id", "domain", "selector", "n", "bpb_pct", "t_total", "config_hash"]


def load_records(paths: Iterable[str | Path]) -> pd.DataFrame:
    files = []
    for p in map(Path, paths):
        files += [p] if p.is_file() else _records_files(p)
    if not files:
        raise FileNotFoundError(f"no records.parquet under {[str(p) for p in paths]}; run `python run.py` first")
    df = with_configurations([_read_records(f) for f in files], files)
    # the same query of the same configuration measured twice (a rerun elsewhere, another tag): keep one
    keys = ["config_id", "query_id"] + (["n"] if "n" in df else [])  # checkpoints: several n per query
    return df.drop_duplicates(keys, keep="last").reset_index(drop=True)


def _records_files(root: Path) -> list:
    """One records file per job directory under root: records.jsonl where it is newer than records.parquet (a job
    still running, or killed, writes its parquet only when it ends or stops), else records.parquet."""
    dirs = sorted({f.parent for name in ("records.parquet", "records.jsonl") for f in root.rglob(name)})
    files = []
    for d in dirs:
        parquet, jsonl = d / "records.parquet", d / "records.jsonl"
        newer = jsonl.exists() and (not parquet.exists() or jsonl.stat().st_mtime > parquet.stat().st_mtime)
        files.append(jsonl if newer else parquet)
    return files


def _read_records(path: Path) -> pd.DataFrame:
    """A records.parquet, or a records.jsonl given by name; anything else, or one without a records file's
    columns, is refused in one line naming the file."""
    try:
        df = read_jsonl(path) if path.suffix == ".jsonl" else pd.read_parquet(path)
    except (ArrowException, OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable records file ({str(e).splitlines()[0][:120]}); delete it, or "
                        f"rerun its job, which rewrites it from records.jsonl") from None
    missing = [c for c in REQUIRED if c not in df]
    if missing:
        raise UserError(f"{path} is not a records file of this harness (no {', '.join(missing)} column); "
                        f"give the report only run, multirun or records.parquet/.jsonl paths")
    return df


def with_settings(records: pd.DataFrame) -> pd.DataFrame:
    """Adds `setting` (what a point of the front is: a fixed n, or alpha with its cap), `anchor` (a fixed-budget
    record that selected nothing: none, dynamic_eval, merge) and `order` to sort by."""
    alpha = records["alpha"] if "alpha" in records else pd.Series(np.nan, index=records.index)
    budget = records["budget"].fillna(records.n) if "budget" in records else records["n"]
    fixed = alpha.isna()
    setting = np.where(fixed, "n=" + records.n.astype(int).astype(str),
                       "alpha=" + alpha.map("{:g}".format) + " n<=" + budget.astype(int).astype(str))
    method = records["method"].fillna("finetune") if "method" in records else "finetune"  # older records
    label = records["label"].fillna("") if "label" in records else ""
    return records.assign(setting=setting, anchor=fixed & (records.n == 0),
                          order=np.where(fixed, records.n, budget + 0.5), method=method, label=label)
