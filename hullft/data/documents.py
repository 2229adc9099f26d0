"""Corpus -> documents: cut sources into bounded documents, drop exact duplicates, split by source.

The split is by *source* (a file, a Bible book, ...), so no text of a query document, nor of any other
document cut from the same source, is in the training pool.
"""
from __future__ import annotations

import hashlib
import heapq
import sys
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import pandas as pd

from hullft.config import CorpusKind, DataConfig
from hullft.data.corpus import DOMAINS
from hullft.errors import UserError
from hullft.data.jsonl import read_pile_jsonl


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


def corpus_sources(cfg: DataConfig) -> Iterable[Tuple[str, str, str]]:
    """(domain, source_id, text) for the configured corpus."""
    if cfg.kind == CorpusKind.jsonl:
        if not cfg.path:
            raise ValueError("data=jsonl needs data.path=/path/to/corpus.jsonl[.zst]")
        return read_pile_jsonl(cfg.path)
    return _offline_sources(cfg)


def build_documents(cfg: DataConfig) -> pd.DataFrame:
    """All documents in one table (see document_batches)."""
    return pd.concat(list(document_batches(cfg)), ignore_index=True)


def document_batches(cfg: DataConfig) -> Iterator[pd.DataFrame]:
    """The documents, one domain at a time (each released once yielded). Columns: domain, source, doc_id, text,
    split ('pool' or 'query'), in (domain, seeded order) order.

    The corpus is read once, in a stream: exact duplicates are dropped as they come (a 16-byte digest per
    document seen), and each domain keeps only its `max_docs_per_domain` first documents in the seeded order
    in a bounded heap, so memory holds at most that many documents' text per domain, whatever the corpus size.
    """
    kept: Dict[str, list] = {}
    seen, found, counter = set(), set(), 0
    # plain values: a DictConfig read per document is slow
    wanted, max_chars, per_source = set(cfg.domains), int(cfg.max_doc_chars), int(cfg.max_docs_per_source)
    per_domain, seed = int(cfg.max_docs_per_domain), cfg.seed
    for domain, source, text in corpus_sources(cfg):
        found.add(domain)
        if wanted and domain not in wanted:
            continue
        for i, piece in enumerate(cut_document(text, max_chars, limit=per_source)):
            digest = hashlib.sha256(piece.encode()).digest()[:16]
            if digest in seen:
                continue
            seen.add(digest)
            doc_id = f"{source}#{i}"
            item = (-unit_hash(seed, "doc", doc_id), counter, (domain, source, doc_id, piece))
            counter += 1
            heap = kept.setdefault(domain, [])
            if len(heap) < per_domain:
                heapq.heappush(heap, item)
            elif item[0] > heap[0][0]:  # earlier in the seeded order than the latest kept
                heapq.heapreplace(heap, item)
    missing = sorted(set(cfg.domains) - found)
    if missing:
        raise UserError(f"data.domains names {missing}, which the corpus does not hold (it has {sorted(found)}); "
                        f"drop them or fix their spelling")
    if not kept:
        raise UserError(f"the corpus '{cfg.name}' is empty: no document with text was found")
    domains, skipped = sorted(kept), 0
    for domain in domains:
        heap = kept.pop(domain)
        docs = pd.DataFrame([(*row, -neg) for neg, _, row in heap], columns=["domain", "source", "doc_id", "text",
                                                                              "order"])
        del heap
        docs = docs.sort_values("order", kind="stable").reset_index(drop=True)
        docs["split"] = ["query" if unit_hash(cfg.seed, "split", d, s) < cfg.query_fraction else "pool"
                         for d, s in zip(docs.domain, docs.source)]
        if set(docs.split) != {"pool", "query"}:
            problem = (f"domain '{domain}' has {docs.source.nunique()} source(s), too few to hold out queries and "
                       f"keep a pool")
            if cfg.domains:  # asked for by name: the user must hear it
                raise UserError(f"{problem}; add text, change data.query_fraction or drop it from data.domains")
            print(f"{problem}: skipped (add text or change data.query_fraction)", file=sys.stderr)
            skipped += 1
            continue
        yield docs.drop(columns="order")
    if skipped == len(domains):
        raise UserError(f"the corpus '{cfg.name}': no domain has enough sources to hold out queries and keep a pool; "
                        f"add text or change data.query_fraction")
