"""Oracles the tests compare the harness against: simple, in-memory versions of what the build does from files."""
from __future__ import annotations

from typing import Iterator, Tuple

import faiss
import numpy as np
import pandas as pd

from hullft.config import DataConfig
from hullft.data import documents as docs_
from hullft.data import index as index_


def corpus_sources(cfg: DataConfig) -> Iterator[Tuple[str, str, str]]:
    """(domain, source_id, text) for the whole corpus, part after part."""
    for part in docs_.corpus_parts(cfg):
        yield from part()


def build_documents(cfg: DataConfig) -> pd.DataFrame:
    """Every part's documents in one process, in memory: columns domain, source, doc_id, text, split, by
    domain, then in reading order. The build (hullft/data/build.py) runs the same steps from files."""
    parts = docs_.corpus_parts(cfg)
    scans = [docs_.scan(part, cfg) for part in parts]
    kept = []
    for p, part in enumerate(parts):
        positions = docs_.chosen(scans[p], [s.digests["digest"] for s in scans[:p]], cfg)
        kept.append(pd.DataFrame(list(docs_.read_pieces(part, cfg, positions)), columns=docs_.KEPT_COLUMNS).assign(part=p))
    everything = pd.concat(kept, ignore_index=True)
    docs_.check_domains({d for s in scans for d in s.found}, len(everything) > 0, cfg)
    out = []
    for domain, group in everything.groupby("domain"):
        docs = docs_.first_of_domain(group, cfg)
        docs["split"] = docs_.query_split(docs.domain, docs.source, cfg)
        if docs_.has_both_splits(docs.split, docs.source.nunique(), domain, cfg):
            out.append(docs)
    if not out:
        raise docs_.no_domain_left(cfg)
    return pd.concat(out, ignore_index=True)[["domain", "source", "doc_id", "text", "split"]]


def build_index(embeddings: np.ndarray, cfg: DataConfig) -> faiss.Index:
    return index_.add_rows(index_.trained_index(embeddings, cfg), embeddings, 0, len(embeddings))
