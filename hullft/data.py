"""The data space: documents -> token-bounded pool sequences -> embeddings -> faiss index, each cached on disk.

Every stage is keyed by a hash of all it depends on and written atomically with a checksum beside it, so a
second run loads in seconds, a changed recipe, corpus, tokenizer or embedder rebuilds only what changed, and
a damaged cache file is rebuilt rather than trusted. The data space's `key` is a hash of the four files'
contents: results are identified by it (hullft/records.py).

CLI:  python -m hullft.data build|stats [hydra overrides, e.g. data=jsonl data.path=pile.jsonl]
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

import faiss
from hullft.cache import atomic_path, cache_root, content_hash, file_digest, source_digest, verified_digest, \
    write_checksum
from hullft.config import CorpusKind, DataConfig
from hullft.corpus import DOMAINS
from hullft.documents import unit_hash, build_documents
from hullft.index import build_index, prepare_for_search


@dataclass
class DataSpace:
    documents: pd.DataFrame  # domain, source, doc_id, text, split
    pool: pd.DataFrame       # domain, doc_id, text, tokens (list of ints), one row per training sequence
    embeddings: np.ndarray   # (len(pool), d) unit rows
    index: faiss.Index
    key: str

    @property
    def queries(self) -> pd.DataFrame:
        return self.documents[self.documents.split == "query"].reset_index(drop=True)

    def stats(self) -> pd.DataFrame:
        docs = self.documents.assign(bytes=self.documents.text.map(lambda t: len(t.encode())))
        table = docs.groupby("domain").agg(documents=("doc_id", "size"), sources=("source", "nunique"),
                                           bytes=("bytes", "sum"))
        table["query_documents"] = docs[docs.split == "query"].groupby("domain").size()
        table["pool_sequences"] = self.pool.groupby("domain").size()
        table["pool_tokens"] = self.pool.assign(n=self.pool.tokens.map(len)).groupby("domain").n.sum()
        return table.fillna(0).astype(int)


def corpus_fingerprint(cfg: DataConfig) -> list:
    """What the documents depend on besides the recipe: a user's corpus file by content; the offline mix's
    system files by name, size and mtime (they change only with their Debian packages)."""
    if cfg.kind == CorpusKind.jsonl:
        p = Path(cfg.path)
        return [str(p), source_digest(p)] if p.is_file() else [str(p)]
    names = cfg.domains or sorted(DOMAINS)
    out = []
    for name in names:
        if name in DOMAINS:
            files = DOMAINS[name].files()
            out.append((name, len(files), content_hash([(str(f), f.stat().st_size, f.stat().st_mtime_ns)
                                                        for f in files])))
    return out


def _cached(path: Path, build: Callable, save: Callable, load: Callable):
    """(value, content digest): path loaded if intact (its checksum and shape checks pass); otherwise built,
    saved atomically with its checksum, and returned."""
    if path.exists():
        try:
            digest = verified_digest(path)
            return load(path), digest
        except Exception as e:  # truncated, corrupt or tampered: say so and rebuild
            print(f"cache file {path} is damaged ({str(e).splitlines()[0]}); rebuilding it", file=sys.stderr)
    value = build()
    with atomic_path(path) as tmp:
        save(value, tmp)
        digest = file_digest(tmp)
    write_checksum(path, digest)
    return value, digest


def _save_parquet(df: pd.DataFrame, path: Path) -> None:
    df.to_parquet(path, index=False)


def _save_npy(arr: np.ndarray, path: Path) -> None:
    with open(path, "wb") as f:
        np.save(f, arr)


def chunk_documents(docs: pd.DataFrame, tokenizer, cfg: DataConfig) -> pd.DataFrame:
    """Token-bounded training sequences from pool documents; at most max_pool_per_domain per domain."""
    pool_docs = docs[docs.split == "pool"]
    rows = []
    encoded = tokenizer(list(pool_docs.text), add_special_tokens=False).input_ids
    for (domain, doc_id), ids in zip(zip(pool_docs.domain, pool_docs.doc_id), encoded):
        for start in range(0, len(ids), cfg.max_length):
            piece = ids[start:start + cfg.max_length]
            if len(piece) >= cfg.min_length:
                rows.append((domain, doc_id, start, piece))
    pool = pd.DataFrame(rows, columns=["domain", "doc_id", "start", "tokens"])
    pool["order"] = [unit_hash(cfg.seed, "seq", d, s) for d, s in zip(pool.doc_id, pool.start)]
    pool = pool.sort_values(["domain", "order"]).groupby("domain", group_keys=False).head(cfg.max_pool_per_domain)
    pool = pool.sort_values(["domain", "doc_id", "start"]).drop(columns="order").reset_index(drop=True)
    pool["text"] = tokenizer.batch_decode(list(pool.tokens))
    return pool


def load_data_space(cfg: DataConfig, tokenizer, tokenizer_fingerprint: str, embedder) -> DataSpace:
    root = cache_root() / "dataspace"
    recipe = {k: str(v) for k, v in cfg.items()}
    doc_fields = ["kind", "path", "domains", "max_doc_chars", "query_fraction", "max_docs_per_domain",
                  "max_docs_per_source", "seed"]
    docs_key = content_hash({k: recipe[k] for k in doc_fields}, corpus_fingerprint(cfg))
    docs, docs_digest = _cached(root / f"documents-{docs_key}.parquet", lambda: build_documents(cfg),
                                _save_parquet, pd.read_parquet)

    seq_key = content_hash(docs_key, tokenizer_fingerprint, cfg.max_length, cfg.min_length, cfg.max_pool_per_domain)
    pool, seq_digest = _cached(root / f"sequences-{seq_key}.parquet", lambda: chunk_documents(docs, tokenizer, cfg),
                               _save_parquet, pd.read_parquet)
    pool["tokens"] = pool.tokens.map(list)

    emb_key = content_hash(seq_key, embedder.fingerprint)
    embeddings, emb_digest = _cached(root / f"embeddings-{emb_key}.npy",
                                     lambda: embedder.embed(list(pool.text), progress=True), _save_npy,
                                     lambda p: _check_rows(np.load(p), len(pool), embedder.dim))

    index_key = content_hash(emb_key, str(cfg.index), cfg.ivf_nlist, cfg.hnsw_m)
    index, index_digest = _cached(root / f"index-{index_key}.faiss", lambda: build_index(embeddings, cfg),
                                  lambda idx, p: faiss.write_index(idx, str(p)),
                                  lambda p: _check_index(faiss.read_index(str(p)), len(pool)))
    key = content_hash(docs_digest, seq_digest, emb_digest, index_digest)
    return DataSpace(docs, pool, embeddings, prepare_for_search(index, cfg), key)


def _check_rows(arr: np.ndarray, rows: int, dim: int) -> np.ndarray:
    if arr.shape != (rows, dim) or not np.isfinite(arr).all():
        raise ValueError(f"embeddings have shape {arr.shape}, expected {(rows, dim)}")
    return arr


def _check_index(index: faiss.Index, rows: int) -> faiss.Index:
    if index.ntotal != rows:
        raise ValueError(f"index holds {index.ntotal} rows, expected {rows}")
    return index


def main(argv: list[str]) -> None:
    from hullft.compose import compose_config
    from hullft.embedder import Embedder
    from hullft.errors import one_line_errors
    from hullft.models import load_model
    from hullft.validate import check_config

    if not argv or argv[0] not in ("build", "stats"):
        sys.exit("usage: python -m hullft.data build|stats [hydra overrides]")
    with one_line_errors():
        cfg = compose_config(argv[1:])
        check_config(cfg)
        model = load_model(cfg.model)
        space = load_data_space(cfg.data, model.tokenizer, model.fingerprint, Embedder(cfg.embedder))
    if argv[0] == "stats":
        with pd.option_context("display.width", 200):
            print(space.stats().to_string())
    else:
        print(f"data space {space.key}: {len(space.documents)} documents, {len(space.pool)} pool sequences")


if __name__ == "__main__":
    main(sys.argv[1:])
