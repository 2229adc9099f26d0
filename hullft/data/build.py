"""Building the data space in stages, each cached under a key of everything it depends on.

    scan       per corpus part: its documents' digests (sharded: data.shard of data.num_shards)
    keep       per corpus part: its first copies, capped per domain (sharded; needs every earlier part's scan)
    documents  the parts' kept documents, capped per domain and split into pool and query (one process)
    chunk      per unit of `data.unit_docs` pool documents: tokenised and cut into sequences (sharded)
    plan       each domain's cutoff in the sequences' seeded order, from the units' summaries (one process)
    embed      per unit: its sequences up to their domain's cutoff, embedded (sharded)
    merge      the units in order, streamed into token store, pool table, embeddings and index (merge.py)

The table that runs them in order is stages.py. A sharded stage's jobs are independent and compute the same
bytes whichever process runs them, so a sharded build is byte for byte the one-process build; no process holds
more than a part, a unit, a domain's capped documents or a buffer. A stage whose input is missing builds it
first, in this process. Every file is written atomically with a checksum beside it; a damaged one is rebuilt.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hullft.cache import checksum_path, content_hash, source_digest, verified_digest
from hullft.config import CorpusKind, DataConfig
from hullft.data import documents as docs_
from hullft.data import sequences
from hullft.data.corpus import DOMAINS
from hullft.data.files import RowGroupWriter, cached, load_json, root, save_json, save_npy, save_parquet
from hullft.data.jsonl import corpus_files

EMBEDDING_DTYPES = {"fp32": np.float32, "fp16": np.float16}
# Bump when a stage's files change meaning, so files of an older layout are never taken for current ones.
# 3: parts and per-domain cutoffs; rows in unit order; the pool table a memory-mapped array.
BUILD_VERSION = 3
DOCUMENT_ROW_GROUP = 1024  # documents are read back by row group: a unit reads only the groups holding its rows


def _name(value) -> str:
    return getattr(value, "value", str(value))


def corpus_fingerprint(cfg: DataConfig) -> list:
    """What the documents depend on besides the recipe: a user's corpus files by content; the offline mix's
    system files by name, size and mtime (they change only with their Debian packages)."""
    if cfg.kind == CorpusKind.jsonl:
        return [[str(p), source_digest(p)] if p.is_file() else [str(p)] for p in corpus_files(cfg.path)]
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
    seq: str    # the pool's sequences in their row order, which is unit order: units' files share this key
    emb: str
    index: str

    @classmethod
    def of(cls, cfg: DataConfig, tokenizer_fingerprint: str, embedder_fingerprint: str) -> "Keys":
        recipe = {k: str(cfg[k]) for k in ("kind", "path", "domains", "max_doc_chars", "query_fraction",
                                           "max_docs_per_domain", "max_docs_per_source", "seed")}
        docs = content_hash(recipe, corpus_fingerprint(cfg), BUILD_VERSION)
        seq = content_hash(docs, tokenizer_fingerprint, cfg.max_length, cfg.min_length, cfg.max_pool_per_domain,
                           cfg.unit_docs, BUILD_VERSION)  # rows come in unit order
        emb = content_hash(seq, embedder_fingerprint, _name(cfg.embedding_dtype))
        parts = [cfg.index_part_rows] if cfg.index_part_rows else []  # one file: the key it always had
        index = content_hash(emb, cfg.index, cfg.ivf_nlist, cfg.hnsw_m, cfg.index_train_size, *parts)
        return cls(docs, seq, emb, index)


def mine(count: int, cfg: DataConfig) -> List[int]:
    """The parts or units of this shard."""
    return [i for i in range(count) if i % cfg.num_shards == cfg.shard]


# --- documents: scan, keep, documents -----------------------------------------------------------------------

def scan(cfg: DataConfig, keys: Keys, p: int, parts: List[docs_.Part]) -> docs_.Scan:
    """Part p's scan (documents.py): its arrays memory-mapped, built here if missing."""
    digests, pieces = root() / f"scan-{keys.docs}-{p}.npy", root() / f"scanpieces-{keys.docs}-{p}.npy"
    names = root() / f"scandomains-{keys.docs}-{p}.json"

    def build():
        result = docs_.scan(parts[p], cfg)
        cached(pieces, lambda: result.pieces, save_npy, lambda path: None)
        cached(names, lambda: {"domains": result.domains, "found": result.found}, save_json, load_json)
        return result.digests

    def load(path):
        for other in (pieces, names):  # missing or damaged: the part is scanned again
            verified_digest(other)
        return np.load(path, mmap_mode="r")
    table = cached(digests, build, save_npy, load)[0]
    found = load_json(names)
    return docs_.Scan(table, np.load(pieces, mmap_mode="r"), found["domains"], found["found"])


KEPT_ROW_GROUP = 512  # documents of one domain per row group of a part's kept file: a domain is read alone


def kept_path(cfg: DataConfig, keys: Keys, p: int, parts: List[docs_.Part]) -> Path:
    """Part p's kept documents (built here if missing), in row groups of one domain each."""
    path = root() / f"kept-{keys.docs}-{p}.parquet"

    def build():
        earlier = [scan(cfg, keys, q, parts).digests["digest"] for q in range(p)]  # mapped, read as searched
        return docs_.chosen(scan(cfg, keys, p, parts), earlier, cfg)

    def save(positions: np.ndarray, tmp: Path) -> None:
        schema = pa.schema([("domain", pa.string()), ("source", pa.string()), ("doc_id", pa.string()),
                            ("text", pa.string()), ("order", pa.float64()), ("position", pa.int64())])
        buffers: Dict[str, list] = {}
        with pq.ParquetWriter(tmp, schema) as writer:
            def flush(domain):
                rows = buffers.pop(domain)
                writer.write_table(pa.Table.from_pylist([dict(zip(docs_.KEPT_COLUMNS, r)) for r in rows], schema))
            for row in docs_.read_pieces(parts[p], cfg, positions):
                buffers.setdefault(row[0], []).append(row)
                if len(buffers[row[0]]) == KEPT_ROW_GROUP:
                    flush(row[0])
            for domain in list(buffers):
                flush(domain)
    cached(path, build, save, lambda path: None)
    return path


def documents_path(cfg: DataConfig, keys: Keys) -> Path:
    """The documents table (built here if missing), on disk: callers read only the rows and columns they need."""
    path = root() / f"documents-{keys.docs}.parquet"
    cached(path, lambda: _kept_files(cfg, keys), lambda kept, tmp: _merge_documents(kept, tmp, cfg), lambda p: None)
    return path


def _kept_files(cfg: DataConfig, keys: Keys) -> List[Path]:
    parts = docs_.corpus_parts(cfg)
    kept = [kept_path(cfg, keys, p, parts) for p in range(len(parts))]
    found = {d for p in range(len(parts)) for d in load_json(root() / f"scandomains-{keys.docs}-{p}.json")["found"]}
    docs_.check_domains(found, any(pq.ParquetFile(path).metadata.num_rows for path in kept), cfg)
    return kept


def _merge_documents(kept: List[Path], tmp: Path, cfg: DataConfig) -> None:
    """Domain by domain: every part's kept keys of the domain, capped (documents.first_of_domain), then the
    chosen documents read from the parts a row group at a time, in reading order. Memory: a domain's keys and a
    row group of text."""
    files = [pq.ParquetFile(path) for path in kept]
    groups = [_row_groups_by_domain(f) for f in files]
    writer = RowGroupWriter(tmp, DOCUMENT_ROW_GROUP)
    for domain in sorted({d for by_domain in groups for d in by_domain}):
        keys = pd.concat([files[p].read_row_groups(by_domain.get(domain, []), columns=["order", "position", "source"])
                          .to_pandas().assign(part=p) for p, by_domain in enumerate(groups)], ignore_index=True)
        keys = docs_.first_of_domain(keys, cfg)
        keys["split"] = docs_.query_split(pd.Series(domain, index=keys.index), keys.source, cfg)
        if not docs_.has_both_splits(keys.split, keys.source.nunique(), domain, cfg):
            continue
        for p, by_domain in enumerate(groups):
            split = dict(zip(*(keys[keys.part == p][c] for c in ("position", "split"))))
            for g in by_domain.get(domain, []) if split else []:
                rows = files[p].read_row_group(g, columns=["domain", "source", "doc_id", "text", "position"])
                rows = rows.to_pandas()
                rows = rows[rows.position.isin(split)]
                rows = rows.assign(split=rows.position.map(split)).drop(columns="position")
                writer.write(pa.Table.from_pandas(rows, preserve_index=False))
    if not writer.close():
        raise docs_.no_domain_left(cfg)


def _row_groups_by_domain(f: pq.ParquetFile) -> Dict[str, List[int]]:
    """A kept file's row groups (each of one domain), by domain, in file order."""
    column = f.schema_arrow.get_field_index("domain")
    out: Dict[str, List[int]] = {}
    for g in range(f.num_row_groups):
        stats = f.metadata.row_group(g).column(column).statistics
        if stats is None or stats.min != stats.max:
            raise ValueError(f"row group {g} of a kept file holds more than one domain")
        out.setdefault(stats.min, []).append(g)
    return out


def documents(cfg: DataConfig, keys: Keys) -> pd.DataFrame:
    return pd.read_parquet(documents_path(cfg, keys))


def queries(cfg: DataConfig, keys: Keys, load: bool = True):
    """(held-out documents, or None if not `load`, digest), in row groups (a job reads those of its queries
    only). Built from the documents a row group at a time: memory holds one, not the corpus' text."""
    def write(_, tmp: Path) -> None:
        docs = pq.ParquetFile(documents_path(cfg, keys))
        schema = docs.schema_arrow.remove(docs.schema_arrow.get_field_index("split"))
        writer = RowGroupWriter(tmp, DOCUMENT_ROW_GROUP, schema)
        for g in range(docs.num_row_groups):
            group = docs.read_row_group(g)
            writer.write(group.filter(pc.equal(group.column("split"), "query")).drop_columns(["split"]))
        writer.close()
    return cached(root() / f"queries-{keys.docs}.parquet", lambda: None, write,
                  pd.read_parquet if load else (lambda p: None))


# --- units: chunk, plan, embed ------------------------------------------------------------------------------

@lru_cache(maxsize=4)
def _opened(path: str, digest: str):
    """The documents file opened (its footer parsed) once per process and version, and where each row group
    starts: a job runs many units."""
    f = pq.ParquetFile(path)
    return f, np.cumsum([0] + [f.metadata.row_group(g).num_rows for g in range(f.num_row_groups)])


@lru_cache(maxsize=4)
def _unit_starts(path: str, digest: str, unit_docs: int) -> np.ndarray:
    """The documents file's row where each unit of `unit_docs` pool documents starts, then the file's end.
    Read a row group at a time, once per version of the file: memory holds a unit's start, not a document's."""
    f = _opened(path, digest)[0]
    starts, pool_seen, offset = [], 0, 0
    for g in range(f.num_row_groups):
        is_pool = pc.equal(f.read_row_group(g, columns=["split"]).column("split"), "pool").to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(is_pool) + offset
        starts.extend(rows[(-pool_seen) % unit_docs::unit_docs].tolist())
        pool_seen, offset = pool_seen + len(rows), offset + len(is_pool)
    return np.array(starts + [offset], dtype=np.int64)


def _documents_version(cfg: DataConfig, keys: Keys) -> Tuple[str, str]:
    """(path, digest) of the documents file, built here if missing: the key of what is read from it."""
    path = documents_path(cfg, keys)
    return str(path), verified_digest(path)


def unit_starts(cfg: DataConfig, keys: Keys) -> np.ndarray:
    return _unit_starts(*_documents_version(cfg, keys), int(cfg.unit_docs))


def unit_count(cfg: DataConfig, keys: Keys) -> int:
    return len(unit_starts(cfg, keys)) - 1


def unit_documents(cfg: DataConfig, keys: Keys, u: int) -> pd.DataFrame:
    """Unit u's pool documents, read from the row groups that hold them."""
    version = _documents_version(cfg, keys)
    starts = _unit_starts(*version, int(cfg.unit_docs))
    f, bounds = _opened(*version)
    first, last = (int(np.searchsorted(bounds, r, side="right")) - 1 for r in (starts[u], starts[u + 1] - 1))
    table = f.read_row_groups(list(range(first, last + 1))).slice(starts[u] - bounds[first], starts[u + 1] - starts[u])
    docs = table.to_pandas()
    return docs[docs.split == "pool"].reset_index(drop=True)


def unit_sequences_path(keys: Keys, u: int) -> Path:
    """Every sequence of unit u with its tokens; removed once the unit's kept table is built."""
    return root() / f"unitseqs-{keys.seq}-{u}.parquet"


def chunk_unit(cfg: DataConfig, keys: Keys, u: int, tokenizer) -> Path:
    """Unit u's sequences (domain, doc_id, start, order, tokens), tokenised here if missing or damaged."""
    def build():
        return sequences.chunk(unit_documents(cfg, keys, u), tokenizer, cfg)
    cached(unit_sequences_path(keys, u), build, save_parquet, lambda p: None)
    return unit_sequences_path(keys, u)


def _chunk_unless_kept(cfg: DataConfig, keys: Keys, u: int, tokenizer) -> None:
    """The chunk stage's work on unit u: none once the unit's kept table is built (it holds all that later
    stages need of the unit, and its sequences file is gone), so a build run again does not tokenise again."""
    if not unit_paths(keys, u)[0].exists():
        chunk_unit(cfg, keys, u, tokenizer)


def plan(cfg: DataConfig, keys: Keys, tokenizer) -> Dict[str, sequences.Cutoff]:
    """Each domain's cutoff (sequences.py), from every unit's sequence keys; a unit already embedded has left
    its keys in its kept table, which holds every sequence the plan needs of it (those it keeps)."""
    n = unit_count(cfg, keys)

    def summaries(columns):
        for u in range(n):
            table_path = unit_paths(keys, u)[0]
            source = table_path if table_path.exists() else chunk_unit(cfg, keys, u, tokenizer)
            yield pd.read_parquet(source, columns=columns)

    def build():
        return {d: list(c) if c else None for d, c in sequences.cutoffs(summaries, cfg.max_pool_per_domain).items()}
    cuts = cached(root() / f"plan-{keys.seq}.json", build, save_json, load_json)[0]
    return {d: tuple(c) if c else None for d, c in cuts.items()}


def unit_paths(keys: Keys, u: int):
    return root() / f"unit-{keys.seq}-{u}.parquet", root() / f"unitemb-{keys.emb}-{u}.npy"


def embed_unit(cfg: DataConfig, keys: Keys, u: int, tokenizer, embedder) -> None:
    """Unit u's kept sequences (domain, doc_id, start, order, tokens) and their embeddings in
    data.embedding_dtype."""
    table_path, emb_path = unit_paths(keys, u)

    def select() -> pd.DataFrame:
        cuts = plan(cfg, keys, tokenizer)
        seqs = pd.read_parquet(chunk_unit(cfg, keys, u, tokenizer))
        return seqs[sequences.kept(seqs, cuts)].reset_index(drop=True)

    table, _ = cached(table_path, select, save_parquet, pd.read_parquet)
    for done in (unit_sequences_path(keys, u), checksum_path(unit_sequences_path(keys, u))):
        done.unlink(missing_ok=True)

    def embed() -> np.ndarray:
        texts = sequences.texts_of(tokenizer, [list(t) for t in table.tokens])
        vectors = embedder.embed(texts, progress=True) if texts else np.zeros((0, embedder.dim), np.float32)
        return vectors.astype(EMBEDDING_DTYPES[_name(cfg.embedding_dtype)])

    cached(emb_path, embed, save_npy, lambda p: _check_rows(np.load(p, mmap_mode="r"), len(table), embedder.dim))


def _check_rows(arr: np.ndarray, rows: int, dim: int) -> np.ndarray:
    if arr.shape != (rows, dim) or not np.isfinite(arr).all():
        raise ValueError(f"embeddings have shape {arr.shape}, expected {(rows, dim)}")
    return arr


def manifest_path(keys: Keys) -> Path:
    return root() / f"space-{keys.index}.json"
