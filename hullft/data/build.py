"""Building the data space in stages, each cached under a key of everything it depends on.

    documents  the corpus read in a stream, cut, de-duplicated, sampled and split (documents.py)
    queries    the held-out documents alone: the only text a job keeps in memory
    plan       which pool sequences the space keeps: every pool document tokenised and chunked, then each
               domain's `max_pool_per_domain` first sequences in a seeded order (keys only, no tokens)
    units      the pool documents in fixed blocks of `data.unit_docs`; per unit: tokenise, chunk, keep the
               planned sequences, embed them. Units are independent, so `data.shard`/`data.num_shards`
               spread them over processes or cluster jobs (each builds the small plan itself, if missing).
    merge      the units in order: the token store (token_store.py), the embeddings (one .npy, memory-mapped,
               `data.embedding_dtype`), the faiss index (index.py), and a manifest.

A unit computes the same bytes whichever process runs it, so a sharded build merges into the data space a
one-process build makes. Every file is written atomically with a checksum beside it; a damaged one is rebuilt.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List

import numpy as np
import pandas as pd

from hullft.cache import atomic_path, cache_root, content_hash, file_digest, source_digest, verified_digest, \
    write_checksum
from hullft.config import CorpusKind, DataConfig
from hullft.data.corpus import DOMAINS
from hullft.data.documents import build_documents, unit_hash
from hullft.data.index import build_index
from hullft.data.token_store import token_dtype, with_offsets, write_tokens
from hullft.errors import UserError

EMBEDDING_DTYPES = {"fp32": np.float32, "fp16": np.float16}
# Bump when a stage's files change meaning, so files of an older layout are never taken for current ones.
BUILD_VERSION = 2


def _name(value) -> str:
    return getattr(value, "value", str(value))


def corpus_fingerprint(cfg: DataConfig) -> list:
    """What the documents depend on besides the recipe: a user's corpus file by content; the offline mix's
    system files by name, size and mtime (they change only with their Debian packages)."""
    if cfg.kind == CorpusKind.jsonl:
        p = Path(cfg.path)
        return [str(p), source_digest(p)] if p.is_file() else [str(p)]
    out = []
    for name in cfg.domains or sorted(DOMAINS):
        if name in DOMAINS:
            files = DOMAINS[name].files()
            out.append((name, len(files), content_hash([(str(f), f.stat().st_size, f.stat().st_mtime_ns)
                                                        for f in files])))
    return out


@dataclass(frozen=True)
class Keys:
    docs: str
    seq: str
    emb: str
    index: str

    @classmethod
    def of(cls, cfg: DataConfig, tokenizer_fingerprint: str, embedder_fingerprint: str) -> "Keys":
        recipe = {k: str(cfg[k]) for k in ("kind", "path", "domains", "max_doc_chars", "query_fraction",
                                           "max_docs_per_domain", "max_docs_per_source", "seed")}
        docs = content_hash(recipe, corpus_fingerprint(cfg))
        seq = content_hash(docs, tokenizer_fingerprint, cfg.max_length, cfg.min_length, cfg.max_pool_per_domain,
                           BUILD_VERSION)
        emb = content_hash(seq, embedder_fingerprint, cfg.unit_docs, _name(cfg.embedding_dtype))
        index = content_hash(emb, cfg.index, cfg.ivf_nlist, cfg.hnsw_m, cfg.index_train_size)
        return cls(docs, seq, emb, index)


def root() -> Path:
    return cache_root() / "dataspace"


def cached(path: Path, build: Callable, save: Callable, load: Callable):
    """(value, digest): path loaded if its checksum and checks pass; otherwise built, saved atomically with
    its checksum, and returned."""
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


def save_parquet(df: pd.DataFrame, path: Path) -> None:
    df.to_parquet(path, index=False)


def save_npy(arr: np.ndarray, path: Path) -> None:
    with open(path, "wb") as f:
        np.save(f, arr)


def documents(cfg: DataConfig, keys: Keys) -> pd.DataFrame:
    return cached(root() / f"documents-{keys.docs}.parquet", lambda: build_documents(cfg), save_parquet,
                  pd.read_parquet)[0]


def queries(cfg: DataConfig, keys: Keys):
    """(held-out documents, digest); the full documents are read only when this table must be built."""
    def build():
        docs = documents(cfg, keys)
        return docs[docs.split == "query"].drop(columns="split").reset_index(drop=True)
    return cached(root() / f"queries-{keys.docs}.parquet", build, save_parquet, pd.read_parquet)


def unit_documents(docs: pd.DataFrame, cfg: DataConfig) -> List[pd.DataFrame]:
    pool = docs[docs.split == "pool"]
    return [pool.iloc[i:i + cfg.unit_docs] for i in range(0, len(pool), cfg.unit_docs)]


def count_units(cfg: DataConfig, keys: Keys) -> int:
    split = pd.read_parquet(root() / f"documents-{keys.docs}.parquet", columns=["split"]).split
    return math.ceil(int((split == "pool").sum()) / cfg.unit_docs)


def chunk(docs: pd.DataFrame, tokenizer, cfg: DataConfig) -> pd.DataFrame:
    """Token-bounded sequences of the documents, each with its seeded sampling order."""
    rows = []
    encoded = tokenizer(list(docs.text), add_special_tokens=False).input_ids if len(docs) else []
    for (domain, doc_id), ids in zip(zip(docs.domain, docs.doc_id), encoded):
        for start in range(0, len(ids), cfg.max_length):
            piece = ids[start:start + cfg.max_length]
            if len(piece) >= cfg.min_length:
                rows.append((domain, doc_id, start, unit_hash(cfg.seed, "seq", doc_id, start), piece))
    return pd.DataFrame(rows, columns=["domain", "doc_id", "start", "order", "tokens"])


def sample(seqs: pd.DataFrame, cfg: DataConfig) -> pd.DataFrame:
    """Each domain's max_pool_per_domain sequences first in the seeded order, in (domain, doc, start) order."""
    kept = seqs.sort_values(["domain", "order"]).groupby("domain", group_keys=False).head(cfg.max_pool_per_domain)
    return kept.sort_values(["domain", "doc_id", "start"]).reset_index(drop=True)


def plan(cfg: DataConfig, keys: Keys, tokenizer) -> pd.DataFrame:
    """The kept sequences' (domain, doc_id, start), in the space's row order."""
    def build():
        docs = documents(cfg, keys)
        return sample(chunk(docs[docs.split == "pool"], tokenizer, cfg), cfg)[["domain", "doc_id", "start"]]
    return cached(root() / f"plan-{keys.seq}.parquet", build, save_parquet, pd.read_parquet)[0]


def unit_paths(keys: Keys, u: int):
    return root() / f"unit-{keys.seq}-{u}.parquet", root() / f"unitemb-{keys.emb}-{u}.npy"


def build_unit(u: int, cfg: DataConfig, keys: Keys, tokenizer, embedder, docs: pd.DataFrame,
               kept: pd.DataFrame) -> None:
    table_path, emb_path = unit_paths(keys, u)

    def select() -> pd.DataFrame:
        seqs = chunk(unit_documents(docs, cfg)[u], tokenizer, cfg)
        return seqs.merge(kept, on=["domain", "doc_id", "start"]).drop(columns="order")

    table, _ = cached(table_path, select, save_parquet, pd.read_parquet)

    def embed() -> np.ndarray:
        texts = tokenizer.batch_decode([list(t) for t in table.tokens])
        return embedder.embed(texts, progress=True) if texts else np.zeros((0, embedder.dim), np.float32)

    cached(emb_path, embed, save_npy, lambda p: _check_rows(np.load(p), len(table), embedder.dim))


def build_units(cfg: DataConfig, keys: Keys, tokenizer, embedder, shard: int = 0, num_shards: int = 1) -> List[int]:
    docs = documents(cfg, keys)
    kept = plan(cfg, keys, tokenizer)
    mine = [u for u in range(len(unit_documents(docs, cfg))) if u % num_shards == shard]
    for u in mine:
        build_unit(u, cfg, keys, tokenizer, embedder, docs, kept)
    return mine


def manifest_path(keys: Keys) -> Path:
    return root() / f"space-{keys.index}.json"


def merge(cfg: DataConfig, keys: Keys, vocab_size: int, dim: int) -> dict:
    """The units in order -> token store, embeddings, index; the manifest last (it marks completion)."""
    n_units = count_units(cfg, keys)
    missing = [u for u in range(n_units) if not all(p.exists() for p in unit_paths(keys, u))]
    if missing:
        raise UserError(f"data space units {missing} of {n_units} are not built: run `python -m hullft.data build "
                        f"data.shard=i data.num_shards=N` for every shard first")
    parts = []
    for u in range(n_units):
        table = pd.read_parquet(unit_paths(keys, u)[0])
        parts.append(table.assign(unit=u, row=np.arange(len(table))))
    kept = pd.concat(parts, ignore_index=True).sort_values(["domain", "doc_id", "start"]).reset_index(drop=True)
    dtype = token_dtype(vocab_size)
    files = {"tokens": cached(root() / f"tokens-{keys.seq}.bin", lambda: None,
                              lambda _, tmp: write_tokens(tmp, kept.tokens, dtype), lambda p: None)[1]}
    table = with_offsets(kept[["domain", "doc_id", "start"]], kept.tokens.map(len).to_numpy(np.int64))
    files["sequences"] = cached(root() / f"pool-{keys.seq}.parquet", lambda: table, save_parquet,
                                pd.read_parquet)[1]

    def gather(value, tmp):
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=EMBEDDING_DTYPES[_name(cfg.embedding_dtype)],
                                        shape=(len(kept), dim))
        for u, rows in kept.groupby("unit").row:
            source = np.load(unit_paths(keys, u)[1], mmap_mode="r")
            out[rows.index.to_numpy()] = source[rows.to_numpy()]
        out.flush()
        del out

    files["embeddings"] = cached(root() / f"embeddings-{keys.emb}.npy", lambda: None, gather, lambda p: None)[1]
    embeddings = np.load(root() / f"embeddings-{keys.emb}.npy", mmap_mode="r")
    files["index"] = cached(root() / f"index-{keys.index}.faiss", lambda: build_index(embeddings, cfg),
                            _write_index, lambda p: None)[1]
    manifest = {"keys": vars(keys), "files": files, "rows": len(kept), "dim": dim, "token_dtype": dtype.name,
                "embedding_dtype": _name(cfg.embedding_dtype), "units": n_units}
    with atomic_path(manifest_path(keys)) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def _write_index(index, path: Path) -> None:
    import faiss

    faiss.write_index(index, str(path))


def _check_rows(arr: np.ndarray, rows: int, dim: int) -> np.ndarray:
    if arr.shape != (rows, dim) or not np.isfinite(arr).all():
        raise ValueError(f"embeddings have shape {arr.shape}, expected {(rows, dim)}")
    return arr
