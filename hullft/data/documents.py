"""Corpus -> documents: cut sources into bounded documents, drop exact duplicates, cap each domain, split by source.

The split is by *source* (a file, a Bible book, ...), so no text of a query document, nor of any other
document cut from the same source, is in the training pool.

The corpus is a list of *parts* (each file of a .jsonl[.zst] corpus; the offline mix is one part), read by
independent jobs in two passes, so no process holds more than one part's digests or a domain's kept documents:

    scan        part p -> its pieces' 16-byte digests, sorted, each with the position of its first copy in p
    keep        part p -> its pieces whose text is in no earlier part (looked up in those parts' scans) and is
                the first copy in p; of those, each domain's `max_docs_per_domain` first in the seeded order
    merge       per domain, the kept documents of every part -> the domain's `max_docs_per_domain` first

This is exactly what reading every part in one stream gives (the first copy of a text is kept; each domain's
cap takes the first documents in the seeded order, ties in reading order): tested against that reference.
"""
from __future__ import annotations

import hashlib
import heapq
import sys
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from hullft.config import CorpusKind, DataConfig
from hullft.data.corpus import DOMAINS
from hullft.data.jsonl import corpus_files, read_pile_jsonl
from hullft.errors import UserError

Part = Callable[[], Iterable[Tuple[str, str, str]]]  # () -> (domain, source_id, text) in reading order
SCAN_DTYPE = np.dtype([("digest", "S16"), ("position", "<i8")])
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


def corpus_sources(cfg: DataConfig) -> Iterator[Tuple[str, str, str]]:
    """(domain, source_id, text) for the whole corpus, part after part."""
    for part in corpus_parts(cfg):
        yield from part()


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


def scan(part: Part, cfg: DataConfig) -> Tuple[np.ndarray, List[str]]:
    """(the part's distinct digests, sorted, each with its first position: SCAN_DTYPE; the domains it holds)."""
    digests, domains = bytearray(), set()
    for _, _, _, _, piece in _pieces(part(), cfg, domains):
        digests += digest(piece)
    flat = np.frombuffer(bytes(digests), dtype="S16")
    unique, first = np.unique(flat, return_index=True)
    out = np.empty(len(unique), SCAN_DTYPE)
    out["digest"], out["position"] = unique, first
    return out, sorted(domains)


def seen_before(mine: np.ndarray, earlier: Sequence[np.ndarray]) -> np.ndarray:
    """Which of these sorted digests some earlier part's scan holds."""
    found = np.zeros(len(mine), bool)
    for other in earlier:
        if len(other):
            at = np.minimum(np.searchsorted(other, mine), len(other) - 1)
            found |= other[at] == mine
    return found


def keep(part: Part, cfg: DataConfig, positions: np.ndarray) -> pd.DataFrame:
    """The part's documents at these (ascending) positions, capped per domain: each domain's
    `max_docs_per_domain` first in the seeded order, in a bounded heap. Columns KEPT_COLUMNS."""
    heaps: dict = {}
    per_domain, seed, at = int(cfg.max_docs_per_domain), cfg.seed, 0
    for position, domain, source, doc_id, piece in _pieces(part(), cfg):
        if at == len(positions):
            break
        if position != positions[at]:
            continue
        at += 1
        item = (-unit_hash(seed, "doc", doc_id), -position, (domain, source, doc_id, piece))
        heap = heaps.setdefault(domain, [])
        if len(heap) < per_domain:
            heapq.heappush(heap, item)
        elif item[:2] > heap[0][:2]:  # earlier in the seeded order (then in reading order) than the latest kept
            heapq.heapreplace(heap, item)
    rows = [(*row, -neg, -neg_position) for heap in heaps.values() for neg, neg_position, row in heap]
    kept = pd.DataFrame(rows, columns=KEPT_COLUMNS)
    return kept.sort_values(["domain", "order", "position"]).reset_index(drop=True)


def first_of_domain(candidates: pd.DataFrame, cfg: DataConfig) -> pd.DataFrame:
    """One domain's documents from every part's kept ones (with a `part` column): its `max_docs_per_domain`
    first in the seeded order, ties in reading order (part, then position)."""
    ordered = candidates.sort_values(["order", "part", "position"], kind="stable")
    return ordered.head(int(cfg.max_docs_per_domain)).reset_index(drop=True)


def split(docs: pd.DataFrame, domain: str, cfg: DataConfig) -> Optional[pd.DataFrame]:
    """One domain's documents with their split ('pool' or 'query', by source), or None (with a message, or
    an error if the domain was asked for by name) if it has too few sources for both."""
    docs = docs.assign(split=["query" if unit_hash(cfg.seed, "split", d, s) < cfg.query_fraction else "pool"
                              for d, s in zip(docs.domain, docs.source)])
    if set(docs.split) == {"pool", "query"}:
        return docs
    problem = f"domain '{domain}' has {docs.source.nunique()} source(s), too few to hold out queries and keep a pool"
    if cfg.domains:  # asked for by name: the user must hear it
        raise UserError(f"{problem}; add text, change data.query_fraction or drop it from data.domains")
    print(f"{problem}: skipped (add text or change data.query_fraction)", file=sys.stderr)
    return None


def check_domains(found: Iterable[str], kept_any: bool, cfg: DataConfig) -> None:
    found = set(found)
    missing = sorted(set(cfg.domains) - found)
    if missing:
        raise UserError(f"data.domains names {missing}, which the corpus does not hold (it has {sorted(found)}); "
                        f"drop them or fix their spelling")
    if not kept_any:
        raise UserError(f"the corpus '{cfg.name}' is empty: no document with text was found")


def build_documents(cfg: DataConfig) -> pd.DataFrame:
    """Every part's documents in this process, in memory (small corpora and tests): columns domain, source,
    doc_id, text, split, in (domain, seeded order) order. The build (build.py) runs the same steps from files."""
    parts = corpus_parts(cfg)
    scans, found = [], set()
    for part in parts:
        table, domains = scan(part, cfg)
        scans.append(table)
        found.update(domains)
    kept = [keep(part, cfg, np.sort(scans[p]["position"][~seen_before(scans[p]["digest"],
                                                                      [s["digest"] for s in scans[:p]])]))
            .assign(part=p) for p, part in enumerate(parts)]
    everything = pd.concat(kept, ignore_index=True)
    check_domains(found, len(everything) > 0, cfg)
    out = [split(first_of_domain(group, cfg), domain, cfg) for domain, group in everything.groupby("domain")]
    out = [d for d in out if d is not None]
    if not out:
        raise UserError(f"the corpus '{cfg.name}': no domain has enough sources to hold out queries and keep a "
                        f"pool; add text or change data.query_fraction")
    return pd.concat(out, ignore_index=True)[["domain", "source", "doc_id", "text", "split"]]
