"""Corpus -> documents: cut sources into bounded documents, drop exact duplicates, cap each domain, split by source.

The split is by *source* (a file, a Bible book, ...), so no text of a query document, nor of any other
document cut from the same source, is in the training pool.

The corpus is a list of *parts* (each file of a .jsonl[.zst] corpus; the offline mix is one part), read by
independent jobs in two passes, so no process holds more than one part's digests or a domain's kept documents:

    scan        part p -> per document cut from it (a *piece*, numbered by its position in p): its domain and
                seeded order; and the pieces' 16-byte digests, sorted, each with the position of its first copy
    keep        part p -> its pieces whose text is in no earlier part (looked up in those parts' scans) and is
                the first copy in p; of those, each domain's `max_docs_per_domain` first in the seeded order,
                chosen from the scan's arrays and then read from the part in a stream
    merge       per domain, the kept documents of every part -> the domain's `max_docs_per_domain` first

This is exactly what reading every part in one stream gives (the first copy of a text is kept; each domain's
cap takes the first documents in the seeded order, ties in reading order), tested against that reference;
documents stay in reading order. Memory: a part's arrays (26 bytes a piece), never the corpus' text.
"""
from __future__ import annotations

import hashlib
import sys
from array import array
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from hullft.config import CorpusKind, DataConfig
from hullft.data.corpus import DOMAINS
from hullft.data.jsonl import corpus_files, read_pile_jsonl
from hullft.errors import UserError

Part = Callable[[], Iterable[Tuple[str, str, str]]]  # () -> (domain, source_id, text) in reading order
SCAN_DTYPE = np.dtype([("digest", "S16"), ("position", "<i8")])
PIECE_DTYPE = np.dtype([("domain", "<u2"), ("order", "<f8")])
KEPT_COLUMNS = ["domain", "source", "doc_id", "text", "order", "position"]


def unit_hash(*parts) -> float:
    """A deterministic number in [0, 1) for sampling and splitting."""
    h = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def cut_document(text: str, max_chars: int, limit: Optional[int] = None) -> List[str]:
    """Cut text at line breaks into pieces of at most max_chars (a longer single line is hard-cut); only the
    first `limit` pieces, if given (the rest of a 2 MB file is then never cut)."""
    pieces: List[str] = []
    for piece in _raw_pieces(text, max_chars):
        if piece.strip():
            pieces.append(piece)
            if len(pieces) == limit:
                break
    return pieces


def _raw_pieces(text: str, max_chars: int) -> Iterator[str]:
    current = ""
    for line in text.splitlines(keepends=True):
        while len(line) > max_chars:
            if current:
                yield current
                current = ""
            yield line[:max_chars]
            line = line[max_chars:]
        if len(current) + len(line) > max_chars and current:
            yield current
            current = ""
        current += line
    if current:
        yield current


def _offline_sources(cfg: DataConfig) -> Iterator[Tuple[str, str, str]]:
    unknown = [d for d in cfg.domains if d not in DOMAINS]
    if unknown:
        raise ValueError(f"data.domains has unknown domain(s) {unknown}; choose from {sorted(DOMAINS)}")
    for name in cfg.domains or sorted(DOMAINS):
        domain = DOMAINS[name]
        files = domain.files()
        if not files:
            msg = f"domain '{name}' skipped: its text is not on this machine (install {domain.debian_package})"
            if cfg.domains:
                raise FileNotFoundError(msg)
            print(msg, file=sys.stderr)
            continue
        files.sort(key=lambda p: unit_hash(cfg.seed, p))
        n_docs = 0
        for path in files:
            for source_id, text in domain.read(path):
                n_docs += min(len(text) // cfg.max_doc_chars + 1, cfg.max_docs_per_source)
                yield name, source_id, text
            if n_docs >= 2 * cfg.max_docs_per_domain:
                break


def corpus_parts(cfg: DataConfig) -> List[Part]:
    """The corpus as parts that can be read independently: a .jsonl corpus's files in name order (data.path
    names one file or a folder of them); the offline mix is one part."""
    if cfg.kind == CorpusKind.jsonl:
        if not cfg.path:
            raise ValueError("data=jsonl needs data.path=/path/to/corpus.jsonl[.zst]")
        return [lambda path=path: read_pile_jsonl(path) for path in corpus_files(cfg.path)]
    return [lambda: _offline_sources(cfg)]


def _pieces(sources: Iterable[Tuple[str, str, str]], cfg: DataConfig,
            found: Optional[set] = None) -> Iterator[Tuple[int, str, str, str, str]]:
    """(position, domain, source, doc_id, text) of every document cut from the wanted domains, in reading order;
    every domain met, wanted or not, is added to `found`."""
    # plain values: a DictConfig read per document is slow
    wanted, max_chars, per_source = set(cfg.domains), int(cfg.max_doc_chars), int(cfg.max_docs_per_source)
    found = set() if found is None else found
    position = 0
    for domain, source, text in sources:
        found.add(domain)
        if wanted and domain not in wanted:
            continue
        for i, piece in enumerate(cut_document(text, max_chars, limit=per_source)):
            yield position, domain, source, f"{source}#{i}", piece
            position += 1


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()[:16]


@dataclass
class Scan:
    digests: np.ndarray  # SCAN_DTYPE: distinct digests, sorted, each with the position of its first copy
    pieces: np.ndarray   # PIECE_DTYPE: per position, the code of its domain in `domains`, and its seeded order
    domains: List[str]   # the wanted domains met, by code
    found: List[str]     # every domain met, wanted or not (to check data.domains)


def scan(part: Part, cfg: DataConfig) -> Scan:
    digests, codes, orders, found = bytearray(), array("H"), array("d"), set()  # 26 bytes a piece, no objects
    code: dict = {}
    seed = cfg.seed
    for _, domain, _, doc_id, piece in _pieces(part(), cfg, found):
        digests += digest(piece)
        codes.append(code.setdefault(domain, len(code)))
        orders.append(unit_hash(seed, "doc", doc_id))
    unique, first = np.unique(np.frombuffer(bytes(digests), dtype="S16"), return_index=True)
    table = np.empty(len(unique), SCAN_DTYPE)
    table["digest"], table["position"] = unique, first
    pieces = np.empty(len(codes), PIECE_DTYPE)
    pieces["domain"], pieces["order"] = np.frombuffer(codes, np.uint16), np.frombuffer(orders, np.float64)
    return Scan(table, pieces, list(code), sorted(found))


def seen_before(mine: np.ndarray, earlier: Sequence[np.ndarray]) -> np.ndarray:
    """Which of these sorted digests some earlier part's scan holds."""
    found = np.zeros(len(mine), bool)
    for other in earlier:
        if len(other):
            at = np.minimum(np.searchsorted(other, mine), len(other) - 1)
            found |= other[at] == mine
    return found


def first_per_domain(codes: np.ndarray, order: np.ndarray, tiebreak: np.ndarray, cap: int) -> np.ndarray:
    """Indices of each domain's `cap` first rows in the seeded order (ties by `tiebreak`), ascending."""
    ranked = np.lexsort((tiebreak, order, codes))
    sorted_codes = codes[ranked]
    group_start = np.searchsorted(sorted_codes, sorted_codes, side="left")
    return np.sort(ranked[np.arange(len(ranked)) - group_start < cap])


def chosen(scan: Scan, earlier: Sequence[np.ndarray], cfg: DataConfig) -> np.ndarray:
    """Positions of the part's pieces to keep (ascending): first copies of texts no earlier part holds, and of
    those each domain's `max_docs_per_domain` first in the seeded order."""
    digests = np.asarray(scan.digests)
    first = np.sort(digests["position"][~seen_before(digests["digest"], earlier)])
    pieces = np.asarray(scan.pieces)[first]
    return first[first_per_domain(pieces["domain"], pieces["order"], first, int(cfg.max_docs_per_domain))]


def read_pieces(part: Part, cfg: DataConfig, positions: np.ndarray) -> Iterator[tuple]:
    """The part's pieces at these (ascending) positions, in a stream: rows of KEPT_COLUMNS."""
    at, seed = 0, cfg.seed
    for position, domain, source, doc_id, piece in _pieces(part(), cfg):
        if at == len(positions):
            return
        if position == positions[at]:
            at += 1
            yield domain, source, doc_id, piece, unit_hash(seed, "doc", doc_id), position


def first_of_domain(keys: pd.DataFrame, cfg: DataConfig) -> pd.DataFrame:
    """Of one domain's kept documents in every part (columns order, part, position, ...), its
    `max_docs_per_domain` first in the seeded order (ties in reading order), in reading order."""
    ordered = keys.sort_values(["order", "part", "position"], kind="stable").head(int(cfg.max_docs_per_domain))
    return ordered.sort_values(["part", "position"]).reset_index(drop=True)


def query_split(domain: pd.Series, source: pd.Series, cfg: DataConfig) -> np.ndarray:
    return np.array(["query" if unit_hash(cfg.seed, "split", d, s) < cfg.query_fraction else "pool"
                     for d, s in zip(domain, source)], dtype=object)


def has_both_splits(split: np.ndarray, sources: int, domain: str, cfg: DataConfig) -> bool:
    """Whether a domain's documents hold queries and a pool; if not, a message (an error if it was asked for
    by name)."""
    if set(split) == {"pool", "query"}:
        return True
    problem = f"domain '{domain}' has {sources} source(s), too few to hold out queries and keep a pool"
    if cfg.domains:  # asked for by name: the user must hear it
        raise UserError(f"{problem}; add text, change data.query_fraction or drop it from data.domains")
    print(f"{problem}: skipped (add text or change data.query_fraction)", file=sys.stderr)
    return False


def check_domains(found: Iterable[str], kept_any: bool, cfg: DataConfig) -> None:
    found = set(found)
    missing = sorted(set(cfg.domains) - found)
    if missing:
        raise UserError(f"data.domains names {missing}, which the corpus does not hold (it has {sorted(found)}); "
                        f"drop them or fix their spelling")
    if not kept_any:
        raise UserError(f"the corpus '{cfg.name}' is empty: no document with text was found")


def no_domain_left(cfg: DataConfig) -> UserError:
    return UserError(f"the corpus '{cfg.name}': no domain has enough sources to hold out queries and keep a pool; "
                     f"add text or change data.query_fraction")
