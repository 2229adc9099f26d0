"""Copy the complete queries of every job under one sweep directory to another: how a long front's progress is
kept in git between sessions and put back on a new machine (docs/methods_large.md).

    python -m hullft.keep_records multirun/methods_large results/methods_large/records   # keep
    python -m hullft.keep_records results/methods_large/records multirun/methods_large   # put back

Each `<job>/records.jsonl` is copied up to its last complete query (a query still being written, or torn by a
kill, is left out), written atomically; `config.yaml` beside it goes along where there is one. A destination that
already holds more complete queries of a job than the source is left as it is, and said so.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import List, Tuple

from hullft.cache import atomic_path
from hullft.records import parse_lines


def complete(path: Path) -> Tuple[bytes, int]:
    """The file's bytes up to its last complete query, and how many complete queries they hold."""
    data = path.read_bytes() if path.exists() else b""
    rows, end = parse_lines(data)
    return data[:end], sum(bool(r.get("final", True)) for r in rows)


def keep(source: Path, destination: Path) -> List[str]:
    """Copies every job's complete queries; returns a line per job."""
    lines = []
    for records in sorted(Path(source).glob("*/records.jsonl")):
        job = records.parent.name
        target = Path(destination) / job / "records.jsonl"
        (data, queries), (held, _) = complete(records), complete(target)
        if len(held) > len(data):
            lines.append(f"{job}: kept the destination's {len(held)} bytes (more than the source's {len(data)})")
            continue
        with atomic_path(target) as tmp:
            Path(tmp).write_bytes(data)
        if (records.parent / "config.yaml").exists():
            shutil.copyfile(records.parent / "config.yaml", target.parent / "config.yaml")
        lines.append(f"{job}: {queries} complete queries")
    return lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source")
    ap.add_argument("destination")
    args = ap.parse_args(argv)
    for line in keep(Path(args.source), Path(args.destination)):
        print(line)


if __name__ == "__main__":
    main()
