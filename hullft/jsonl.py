"""A user's corpus in The Pile's format: one {"text": ..., "meta": {"pile_set_name": ...}} per line."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterator, Tuple

DEFAULT_DOMAIN = "default"


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".zst"):
        import zstandard

        return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(open(path, "rb")), encoding="utf-8")
    return open(path, encoding="utf-8")


def read_pile_jsonl(path: str | Path) -> Iterator[Tuple[str, str, str]]:
    """Yield (domain, source_id, text) per line; a malformed line raises a one-line ValueError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.path={path} does not exist: point it at a .jsonl or .jsonl.zst file")
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise ValueError(f'{path}:{lineno}: line has no string "text" field (expected The Pile format)')
            meta = row.get("meta") or {}
            domain = meta.get("pile_set_name", DEFAULT_DOMAIN) if isinstance(meta, dict) else DEFAULT_DOMAIN
            yield str(domain), f"{path.name}:{lineno}", row["text"]
