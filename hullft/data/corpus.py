"""The `offline_mix` recipe: real text in many domains that ships in Debian packages and Python installs.

Each domain lists its source files deterministically and reads each file into (source_id, text) pairs.
A *source* is the unit of the document-disjoint split (a file, a Bible book, a block of dictionary
entries); it is cut into documents of bounded size later, in `hullft.documents`.
"""
from __future__ import annotations

import gzip
import subprocess
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Tuple

Source = Tuple[str, str]  # (source_id, text)


@dataclass(frozen=True)
class Domain:
    name: str
    debian_package: str  # where the text comes from, for the "missing" message
    files: Callable[[], List[Path]]
    read: Callable[[Path], Iterator[Source]]


def _glob(root: str, pattern: str) -> List[Path]:
    base = Path(root)
    return sorted(p for p in base.glob(pattern) if p.is_file()) if base.is_dir() else []


def _read_text(path: Path) -> Iterator[Source]:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    text = raw.decode("utf-8", errors="replace")
    if text.strip():
        yield str(path), text


def _licence_files() -> List[Path]:
    return _glob("/usr/share/common-licenses", "*") + _glob("/usr/share/doc", "*/copyright")


def _kjv_files() -> List[Path]:
    data = Path("/usr/lib/bible.data")
    return [data] if data.exists() and Path("/usr/bin/bible").exists() else []


def _read_kjv(_: Path) -> Iterator[Source]:
    """One source per book; verses keep their chapter:verse reference."""
    out = subprocess.run(["bible", "-f", "gen1:1-rev22:21"], capture_output=True, text=True, check=True)
    books: dict = {}
    for line in out.stdout.splitlines():
        ref, _, verse = line.partition(" ")
        book = ref.rstrip("0123456789:")
        if verse:
            books.setdefault(book, []).append(f"{ref[len(book):]} {verse}")
    for book, verses in books.items():
        yield f"kjv:{book}", "\n".join(verses) + "\n"


def _b64_number(s: str) -> int:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    n = 0
    for ch in s:
        n = n * 64 + alphabet.index(ch)
    return n


def _read_dictd(path: Path, entries_per_source: int = 200) -> Iterator[Source]:
    """A dictd database (.dict.dz + .index): entries in index order, grouped in blocks."""
    body = gzip.decompress(path.read_bytes())
    index = path.with_name(path.name.replace(".dict.dz", ".index"))
    block: list = []
    for i, line in enumerate(index.read_text(encoding="utf-8", errors="replace").splitlines()):
        word, off, length = line.split("\t")[:3]
        if word.startswith("00-database"):
            continue
        start = _b64_number(off)
        block.append(body[start:start + _b64_number(length)].decode("utf-8", errors="replace"))
        if len(block) == entries_per_source:
            yield f"{path.name}:{i}", "\n".join(block)
            block = []
    if block:
        yield f"{path.name}:end", "\n".join(block)


def _fortune_files() -> List[Path]:
    return [p for p in _glob("/usr/share/games/fortunes", "*") if p.suffix not in (".dat", ".u8")]


def _read_fortunes(path: Path) -> Iterator[Source]:
    text = path.read_text(encoding="utf-8", errors="replace")
    entries = [e.strip("\n") for e in text.split("\n%\n") if e.strip()]
    if entries:
        yield str(path), "\n\n".join(entries) + "\n"


DOMAINS = {d.name: d for d in [
    Domain("python", "python3 (stdlib sources)",
           lambda: _glob(sysconfig.get_paths()["stdlib"], "**/*.py"), _read_text),
    Domain("c_headers", "libc6-dev and friends", lambda: _glob("/usr/include", "**/*.h"), _read_text),
    Domain("python_docs", "python3.11-doc",
           lambda: _glob("/usr/share/doc/python3.11/html/_sources", "**/*.rst.txt"), _read_text),
    Domain("perl_docs", "perl-doc", lambda: _glob("/usr/share/perl", "*/pod/*.pod"), _read_text),
    Domain("licenses", "base-files and every package's copyright file", _licence_files, _read_text),
    Domain("changelogs", "every package's changelog.Debian.gz",
           lambda: _glob("/usr/share/doc", "*/changelog.Debian.gz"), _read_text),
    Domain("kjv", "bible-kjv + bible-kjv-text", _kjv_files, _read_kjv),
    Domain("dictionary", "dict-gcide", lambda: _glob("/usr/share/dictd", "gcide.dict.dz"), _read_dictd),
    Domain("fortunes", "fortunes", _fortune_files, _read_fortunes),
]}
