"""Building the data space in stages, each cached under a key of everything it depends on.

    documents  the corpus read in a stream, cut, de-duplicated, sampled and split (documents.py)
    queries    the held-out documents alone: the only text a job keeps in memory
    plan       which pool sequences the space keeps: every pool document tokenised and chunked, then each
               domain's `max_pool_per_domain` first sequences in a seeded order (keys only, no tokens)
    units      the pool documents in fixed blocks of `data.unit_docs`; per unit: keep the planned sequences
               (from the plan's tokenised sequences of the unit, or tokenising its documents again where that
               file is gone), embed them. Units are independent, so `data.shard`/`data.num_shards`
               spread them over processes or cluster jobs (each builds the small plan itself, if missing).
    merge      the units in order: the token store (token_store.py), the embeddings (one .npy, memory-mapped,
               `data.embedding_dtype`), the faiss index (index.py), and a manifest.

A unit computes the same bytes whichever process runs it, so a sharded build merges into the data space a
one-process build makes. Every file is written atomically with a checksum beside it; a damaged one is rebuilt.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hullft.cache import atomic_path, cache_root, checksum_path, content_hash, file_digest, source_digest, \
    verified_digest, write_checksum
from hullft.config import CorpusKind, DataConfig
from hullft.data.corpus import DOMAINS
from hullft.data.documents import document_batches, unit_hash
from hullft.data.index import build_index
from hullft.data.embeddings import EmbeddingFile, EmbeddingFileWriter
from hullft.data.token_store import TokenFileWriter, token_dtype, with_offsets
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
    seq: str    # the pool's sequences (token store)
    units: str  # their split into units of data.unit_docs documents (plan, unit tables)
    emb: str
    index: str

    @classmethod
    def of(cls, cfg: DataConfig, tokenizer_fingerprint: str, embedder_fingerprint: str) -> "Keys":
        recipe = {k: str(cfg[k]) for k in ("kind", "path", "domains", "max_doc_chars", "query_fraction",
                                           "max_docs_per_domain", "max_docs_per_source", "seed")}
        docs = content_hash(recipe, corpus_fingerprint(cfg))
        seq = content_hash(docs, tokenizer_fingerprint, cfg.max_length, cfg.min_length, cfg.max_pool_per_domain,
                           BUILD_VERSION)
        units = content_hash(seq, cfg.unit_docs)
        emb = content_hash(seq, embedder_fingerprint, cfg.unit_docs, _name(cfg.embedding_dtype))
        index = content_hash(emb, cfg.index, cfg.ivf_nlist, cfg.hnsw_m, cfg.index_train_size)
        return cls(docs, seq, units, emb, index)


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


DOCUMENT_ROW_GROUP = 1024  # documents are read back by row group: a unit reads only the groups holding its rows


def documents_path(cfg: DataConfig, keys: Keys) -> Path:
    """The documents table (built here if missing), on disk: callers read only the rows and columns they need."""
    path = root() / f"documents-{keys.docs}.parquet"
    cached(path, lambda: document_batches(cfg), _write_batches, lambda p: None)
    return path


def _write_batches(batches, path: Path) -> None:
    """Domain after domain, so memory holds one domain's table (and the heaps not yet written)."""
    writer = None
    for df in batches:
        table = pa.Table.from_pandas(df, preserve_index=False)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=DOCUMENT_ROW_GROUP)
    writer.close()


def documents(cfg: DataConfig, keys: Keys) -> pd.DataFrame:
    return pd.read_parquet(documents_path(cfg, keys))


def queries(cfg: DataConfig, keys: Keys, load: bool = True):
    """(held-out documents, or None if not `load`, digest); only the query rows of the documents are read to
    build this table."""
    def build():
        docs = pd.read_parquet(documents_path(cfg, keys), filters=[("split", "==", "query")])
        return docs.drop(columns="split").reset_index(drop=True)
    return cached(root() / f"queries-{keys.docs}.parquet", build, save_parquet,
                  pd.read_parquet if load else (lambda p: None))


def unit_rows(path: Path, cfg: DataConfig) -> List[np.ndarray]:
    """Per unit, the documents file's row numbers of its `data.unit_docs` pool documents."""
    split = pq.read_table(path, columns=["split"]).column("split").to_numpy(zero_copy_only=False)
    pool = np.flatnonzero(split == "pool")
    return [pool[i:i + cfg.unit_docs] for i in range(0, len(pool), cfg.unit_docs)]


def read_rows(path: Path, rows: np.ndarray) -> pd.DataFrame:
    """These (ascending) rows of a parquet file, reading only the row groups that hold them."""
    f = pq.ParquetFile(path)
    bounds = np.cumsum([0] + [f.metadata.row_group(g).num_rows for g in range(f.num_row_groups)])
    if not len(rows):
        return f.schema_arrow.empty_table().to_pandas()
    first, last = (int(np.searchsorted(bounds, r, side="right")) - 1 for r in (rows[0], rows[-1]))
    table = f.read_row_groups(list(range(first, last + 1)))
    return table.take(pa.array(rows - bounds[first])).to_pandas()


def token_ids(tokenizer, texts: List[str]) -> List[List[int]]:
    """Each text's token ids without special tokens: tokenizer(texts).input_ids. A fast tokenizer's Rust backend
    is called directly and skips the character offsets: 1.2x faster on the default pool's 31 MB. Not where the
    backend pads or truncates by itself (as a saved BERT tokenizer may): there transformers turns that off."""
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is not None and backend.padding is None and backend.truncation is None:
        return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False).input_ids


def texts_of(tokenizer, sequences: List[List[int]]) -> List[str]:
    """tokenizer.batch_decode(sequences). Where that is the Rust backend's decode, one sequence at a time from
    Python (a fast tokenizer that cleans up no spaces), the backend decodes them all at once: 2.4x faster."""
    if getattr(tokenizer, "is_fast", False) and not tokenizer.clean_up_tokenization_spaces:
        return tokenizer.backend_tokenizer.decode_batch(sequences, skip_special_tokens=False)
    return tokenizer.batch_decode(sequences)


def chunk(docs: pd.DataFrame, tokenizer, cfg: DataConfig) -> pd.DataFrame:
    """Token-bounded sequences of the documents, each with its seeded sampling order."""
    rows = []
    encoded = token_ids(tokenizer, list(docs.text))
    max_length, min_length, seed = int(cfg.max_length), int(cfg.min_length), cfg.seed  # a DictConfig read is slow
    for (domain, doc_id), ids in zip(zip(docs.domain, docs.doc_id), encoded):
        for start in range(0, len(ids), max_length):
            piece = ids[start:start + max_length]
            if len(piece) >= min_length:
                rows.append((domain, doc_id, start, unit_hash(seed, "seq", doc_id, start), piece))
    return pd.DataFrame(rows, columns=["domain", "doc_id", "start", "order", "tokens"])


def sample(seqs: pd.DataFrame, cfg: DataConfig) -> pd.DataFrame:
    """Each domain's max_pool_per_domain sequences first in the seeded order, in (domain, doc, start) order."""
    kept = seqs.sort_values(["domain", "order"]).groupby("domain", group_keys=False).head(cfg.max_pool_per_domain)
    return kept.sort_values(["domain", "doc_id", "start"]).reset_index(drop=True)


def plan(cfg: DataConfig, keys: Keys, tokenizer) -> pd.DataFrame:
    """The kept sequences' (domain, doc_id, start, unit), in the space's row order. Built unit by unit,
    keeping keys only, so its memory grows with the number of sequences, not of tokens. Each unit's tokenised
    sequences are left on disk for that unit (unit_sequences), so its documents are tokenised once."""
    def build():
        path = documents_path(cfg, keys)
        parts = []
        for u, rows in enumerate(unit_rows(path, cfg)):
            seqs = chunk(read_rows(path, rows), tokenizer, cfg)
            cached(unit_sequences_path(keys, u), lambda: seqs, save_parquet, lambda p: None)
            parts.append(seqs.drop(columns="tokens").assign(unit=u))
        return sample(pd.concat(parts, ignore_index=True), cfg)[["domain", "doc_id", "start", "unit"]]
    return cached(root() / f"plan-{keys.units}.parquet", build, save_parquet, pd.read_parquet)[0]


def unit_paths(keys: Keys, u: int):
    return root() / f"unit-{keys.units}-{u}.parquet", root() / f"unitemb-{keys.emb}-{u}.npy"


def unit_sequences_path(keys: Keys, u: int) -> Path:
    """Every sequence of unit u with its tokens, as the plan cut them; removed once the unit's table is built."""
    return root() / f"unitseqs-{keys.units}-{u}.parquet"


def unit_sequences(keys: Keys, u: int) -> Optional[pd.DataFrame]:
    """Unit u's sequences from the plan's file, or None if it is missing or damaged."""
    path = unit_sequences_path(keys, u)
    if not path.exists():
        return None
    try:
        verified_digest(path)
        return pd.read_parquet(path)
    except Exception as e:  # truncated or tampered: tokenise the documents instead
        print(f"cache file {path} is damaged ({str(e).splitlines()[0]}); tokenising unit {u} again",
              file=sys.stderr)
        return None


def build_unit(u: int, cfg: DataConfig, keys: Keys, tokenizer, embedder, read_documents: Callable[[], pd.DataFrame],
               kept: pd.DataFrame) -> None:
    """One unit's kept sequences (domain, doc_id, start, tokens) and their embeddings in data.embedding_dtype."""
    table_path, emb_path = unit_paths(keys, u)

    def select() -> pd.DataFrame:
        seqs = unit_sequences(keys, u)
        if seqs is None:
            docs = read_documents()
            seqs = chunk(docs[docs.doc_id.isin(kept.doc_id)], tokenizer, cfg)  # only documents holding kept ones
        return seqs.merge(kept[["domain", "doc_id", "start"]], on=["domain", "doc_id", "start"]).drop(columns="order")

    table, _ = cached(table_path, select, save_parquet, pd.read_parquet)
    for done in (unit_sequences_path(keys, u), checksum_path(unit_sequences_path(keys, u))):
        done.unlink(missing_ok=True)

    def embed() -> np.ndarray:
        texts = texts_of(tokenizer, [list(t) for t in table.tokens])
        vectors = embedder.embed(texts, progress=True) if texts else np.zeros((0, embedder.dim), np.float32)
        return vectors.astype(EMBEDDING_DTYPES[_name(cfg.embedding_dtype)])

    cached(emb_path, embed, save_npy, lambda p: _check_rows(np.load(p), len(table), embedder.dim))


def build_units(cfg: DataConfig, keys: Keys, tokenizer, embedder, shard: int = 0, num_shards: int = 1) -> List[int]:
    path = documents_path(cfg, keys)
    kept = plan(cfg, keys, tokenizer)
    units = unit_rows(path, cfg)
    mine = [u for u in range(len(units)) if u % num_shards == shard]
    for u in mine:
        build_unit(u, cfg, keys, tokenizer, embedder, lambda rows=units[u]: read_rows(path, rows), kept[kept.unit == u])
    return mine


def manifest_path(keys: Keys) -> Path:
    return root() / f"space-{keys.index}.json"


def merge(cfg: DataConfig, keys: Keys, vocab_size: int, dim: int) -> dict:
    """The units -> token store, embeddings, index; the manifest last (it marks completion). Rows are placed
    in the space's order with positioned writes, one unit at a time, so memory holds one unit's tokens."""
    n_units = len(unit_rows(documents_path(cfg, keys), cfg))
    missing = [u for u in range(n_units) if not all(p.exists() for p in unit_paths(keys, u))]
    if missing:
        raise UserError(f"data space units {missing} of {n_units} are not built: run `python -m hullft.data build "
                        f"data.shard=i data.num_shards=N` for every shard first")
    parts = []
    for u in range(n_units):
        table = pq.read_table(unit_paths(keys, u)[0])
        lengths = pc.list_value_length(table.column("tokens")).to_numpy(zero_copy_only=False).astype(np.int64)
        parts.append(table.drop_columns(["tokens"]).to_pandas().assign(unit=u, row=np.arange(len(table)),
                                                                       length=lengths))
    kept = pd.concat(parts, ignore_index=True).sort_values(["domain", "doc_id", "start"]).reset_index(drop=True)
    kept["position"] = np.arange(len(kept))
    table = with_offsets(kept[["domain", "doc_id", "start"]], kept.length.to_numpy(np.int64))
    by_unit = {u: group.sort_values("row") for u, group in kept.assign(offset=table.offset).groupby("unit")}
    dtype = token_dtype(vocab_size)

    def write_tokens(_, tmp: Path) -> None:
        with TokenFileWriter(tmp, int(table.length.sum()), dtype) as out:
            for u, rows in by_unit.items():
                tokens = pq.read_table(unit_paths(keys, u)[0], columns=["tokens"]).column("tokens").combine_chunks()
                flat, bounds = tokens.values.to_numpy(), tokens.offsets.to_numpy()
                for r, offset in zip(rows.row.to_numpy(), rows.offset.to_numpy()):
                    out.put(offset, flat[bounds[r]:bounds[r + 1]])

    def write_embeddings(_, tmp: Path) -> None:
        with EmbeddingFileWriter(tmp, len(kept), dim, EMBEDDING_DTYPES[_name(cfg.embedding_dtype)]) as out:
            for u, rows in by_unit.items():
                vectors = np.load(unit_paths(keys, u)[1])
                for r, position in zip(rows.row.to_numpy(), rows.position.to_numpy()):
                    out.put(position, vectors[r])

    files = {"tokens": cached(root() / f"tokens-{keys.seq}.bin", lambda: None, write_tokens, lambda p: None)[1],
             "sequences": cached(root() / f"pool-{keys.seq}.parquet", lambda: table, save_parquet,
                                 pd.read_parquet)[1]}
    embeddings_path = root() / f"embeddings-{keys.emb}.npy"
    files["embeddings"] = cached(embeddings_path, lambda: None, write_embeddings, lambda p: None)[1]
    files["index"] = cached(root() / f"index-{keys.index}.faiss",
                            lambda: build_index(EmbeddingFile(embeddings_path), cfg), _write_index, lambda p: None)[1]
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
