"""Appending a query's records as the directory grows: the cost per append at 10^3, 10^4 and 10^5 records.

    python -m benchmarks.bench_records [--appends 200]

A records.jsonl is filled with N records of a real record's shape (written directly, as a long sweep would have
left it); a store is opened on it (one full read, as a resumed job does), then `--appends` queries are appended
through `RecordStore.append_query` (each a locked, fsynced write after reading what other workers appended) and
timed. Printed: median seconds per append at each N and the ratio to the smallest N (target: ~1, flat).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from hullft.records import RecordStore, strict_json


def record(i: int) -> dict:
    """A record with the fields and value types a finetuning job writes (42 fields)."""
    row = {"query_id": f"domain/file-{i}.txt#0", "domain": "python", "method": "finetune", "selector": "hullft",
           "context_tokens": 0, "n": 8, "budget": 8, "pass_budget": 8, "final": True, "own_pass": True,
           "alpha": None, "k": 200, "refresh_interval": 2, "distinct": 5, "fwd_bwd": 6, "opt_steps": 8}
    row.update({f: 0.123456789 * (i + 1) for f in ("bpb_base", "bpb", "bpb_pct", "sigma", "nll_nats",
                                                   "nll_nats_base", "t_retrieve", "t_select", "t_finetune",
                                                   "t_eval", "t_total", "eval_flops", "train_flops", "t_capture",
                                                   "train_loss", "same_domain")})
    row.update({"captured": False, "diverged": False, "train_tokens": 1840, "query_bytes": 3120,
                "query_bytes_base": 3120, "query_tokens": 811, "diagnostics": "{'support': 5, 'iters': 12}",
                "config_hash": "0123456789abcdef", "data_key": "fedcba9876543210"})
    return row


def append_seconds(size: int, appends: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d)
        (path / "records.jsonl").write_text("".join(strict_json(record(i)) + "\n" for i in range(size)))
        store = RecordStore(path, "0123456789abcdef")
        store.accept_data("fedcba9876543210")
        times = []
        for i in range(size, size + appends):
            start = time.perf_counter()
            assert store.append_query([record(i)])
            times.append(time.perf_counter() - start)
        return statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--appends", type=int, default=200)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    args = ap.parse_args(argv)
    first = None
    for size in args.sizes:
        seconds = append_seconds(size, args.appends)
        first = first or seconds
        print(f"{size:>8,} records: {seconds * 1e3:7.3f} ms per append (median of {args.appends}), "
              f"ratio to {args.sizes[0]:,}: {seconds / first:.2f}")


if __name__ == "__main__":
    main()
