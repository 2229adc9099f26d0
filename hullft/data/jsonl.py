"""A user's corpus in The Pile's format: one {"text": ..., "meta": {"pile_set_name": ...}} per line, in one
file or in every corpus file of a folder (The Pile's train/00.jsonl.zst ... 29.jsonl.zst)."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Iterator, List, Tuple

from hullft.errors import UserError

DEFAULT_DOMAIN = "default"
CORPUS_SUFFIXES = (".jsonl", ".jsonl.zst", ".json", ".json.zst")


def corpus_path_problems(path: str) -> List[str]:
    if not path:
        return ["data.path is empty: data=jsonl needs data.path=/path/to/corpus.jsonl[.zst]"]
    p = Path(path)
    if p.is_dir():
        if not corpus_files(p):
            return [f"data.path={path} is a folder with no {' or '.join(CORPUS_SUFFIXES[:2])} file in it: "
                    f"point it at The Pile's files or at one of them"]
        return [problem for f in corpus_files(p) for problem in corpus_path_problems(str(f))][:1]
    if not p.exists():
        return [f"data.path={path} does not exist: point it at a .jsonl or .jsonl.zst file"]
    if not p.name.endswith(CORPUS_SUFFIXES):
        return [f"data.path={path}: expected a file ending in {' or '.join(CORPUS_SUFFIXES[:2])} (The Pile's format)"]
    if not os.access(p, os.R_OK):
        return [f"data.path={path} is not readable: fix its permissions"]
    return []


def corpus_files(path: str | Path) -> List[Path]:
    """data.path's corpus files: the file itself, or a folder's corpus files in name order."""
    p = Path(path)
    if p.is_dir():
        return sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith(CORPUS_SUFFIXES))
    return [p]


class _ZstFrames(io.RawIOBase):
    """The decompressed bytes of a .zst file, frame after frame. Unlike zstandard's stream_reader, a file
    that ends inside a frame (a cut-short download) is an error, not a silently shorter corpus."""

    def __init__(self, path: Path, chunk: int = 1 << 20):
        import zstandard

        self.path, self.chunk, self.file = path, chunk, open(path, "rb")
        self.new_frame = zstandard.ZstdDecompressor().decompressobj
        self.frame, self.started, self.pending, self.at = self.new_frame(), False, b"", 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self.at == len(self.pending):
            self.pending, self.at = b"", 0
            data = self.file.read(self.chunk)
            if not data:
                if self.started and not self.frame.eof:
                    raise UserError(f"data.path={self.path} ends in the middle of a zstd frame (cut short?); "
                                     f"download or compress it again")
                return 0
            while data:
                if self.frame.eof:
                    self.frame, self.started = self.new_frame(), False
                self.started = True
                self.pending += self.frame.decompress(data)
                data = self.frame.unused_data if self.frame.eof else b""
        n = min(len(buffer), len(self.pending) - self.at)  # an offset, not a slice: slicing copies the rest
        buffer[:n] = memoryview(self.pending)[self.at:self.at + n]
        self.at += n
        return n

    def close(self) -> None:
        self.file.close()
        super().close()


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".zst"):
        return io.TextIOWrapper(io.BufferedReader(_ZstFrames(path)), encoding="utf-8")
    return open(path, encoding="utf-8")


def read_pile_jsonl(path: str | Path) -> Iterator[Tuple[str, str, str]]:
    """Yield (domain, source_id, text) per line; a malformed line raises a one-line ValueError."""
    path = Path(path)
    problems = corpus_path_problems(str(path))
    if problems:
        raise UserError(problems[0])
    with _open_text(path) as f:
        for lineno, line in _numbered_lines(f, path):
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


def _numbered_lines(f, path: Path) -> Iterator[Tuple[int, str]]:
    lineno = 0
    try:
        for lineno, line in enumerate(f, 1):
            yield lineno, line
    except UnicodeDecodeError:
        raise UserError(f"data.path={path}: line {lineno + 1} is not UTF-8 text; is it a binary file? "
                        f"give a .jsonl or .jsonl.zst file") from None
    except Exception as e:
        if type(e).__name__ == "ZstdError":
            raise UserError(f"data.path={path} is not a valid zstd file ({e}); compress it again") from None
        raise
