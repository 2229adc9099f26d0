"""The units, in order, streamed into the data space's files; the index; the manifest last (it marks completion).

    tokens-<seq>.bin        every kept sequence's tokens back to back (token_store.py)
    pooltable-<seq>.npy     per row: domain code, offset, length (memory-mapped by a job)
    pool-<seq>.parquet      per row: domain, doc_id, start (read on demand: pool_keys)
    embeddings-<emb>.npy    per row: its embedding, in data.embedding_dtype
    index-<index>.faiss     built from the embeddings read in chunks (index.py); IVF lists in a file beside it;
                            with data.index_part_rows, index-<index>-<i>of<n>.faiss, one per that many rows

Rows are in unit order, so each file is written front to back, one unit at a time: memory holds one unit's
columns (arrays, no Python object per row), whatever the number of rows.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Tuple

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hullft.cache import atomic_path, file_digest, verified_digest, write_checksum
from hullft.config import DataConfig
from hullft.data import build
from hullft.data.embeddings import EmbeddingFile, npy_header
from hullft.data.files import intact
from hullft.data.index import add_rows, lists_path, part_bounds, trained_index, write_index
from hullft.data.token_store import POOL_TABLE_DTYPE, token_dtype
from hullft.errors import UserError


def space_paths(keys: build.Keys) -> Dict[str, Path]:
    root = build.root()
    return {"tokens": root / f"tokens-{keys.seq}.bin", "table": root / f"pooltable-{keys.seq}.npy",
            "sequences": root / f"pool-{keys.seq}.parquet", "embeddings": root / f"embeddings-{keys.emb}.npy"}


def index_files(keys: build.Keys, parts: int) -> List[Tuple[str, str, Path]]:
    """Per index file: its name in the manifest, its lists file's name there (if it has one), its path."""
    root = build.root()
    if parts == 1:
        return [("index", "lists", root / f"index-{keys.index}.faiss")]
    return [(f"index-{i}", f"lists-{i}", root / f"index-{keys.index}-{i}of{parts}.faiss") for i in range(parts)]


def merge(cfg: DataConfig, keys: build.Keys, vocab_size: int, dim: int) -> dict:
    n_units = build.unit_count(cfg, keys)
    units = [build.unit_paths(keys, u) for u in range(n_units)]
    missing = [u for u, paths in enumerate(units) if not all(p.exists() for p in paths)]
    if missing:
        raise UserError(f"data space units {missing} of {n_units} are not embedded: run `python -m hullft.data "
                        f"embed data.shard=i data.num_shards=N` for every shard first (or `build`)")
    paths = space_paths(keys)
    domains = sorted({d for table, _ in units for d in pq.read_table(table, columns=["domain"]).column("domain")
                      .unique().to_pylist()})
    files = _verified(paths, ("tokens", "table", "sequences", "embeddings"))
    if files is None:
        files = _write_rows(units, paths, domains, token_dtype(vocab_size), dim, build.EMBEDDING_DTYPES[
            build._name(cfg.embedding_dtype)])
    embeddings = EmbeddingFile(paths["embeddings"])
    files.update(_write_index(embeddings, cfg, keys))
    rows = embeddings.shape[0]
    manifest = {"keys": vars(keys), "files": files, "rows": rows, "dim": dim, "domains": domains,
                "token_dtype": token_dtype(vocab_size).name, "embedding_dtype": build._name(cfg.embedding_dtype),
                "units": n_units, "index_parts": len(part_bounds(rows, cfg))}
    with atomic_path(build.manifest_path(keys)) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def _write_index(embeddings: EmbeddingFile, cfg: DataConfig, keys: build.Keys) -> Dict[str, str]:
    """The index files' digests, each file built from its rows if missing: trained once on a sample of all rows,
    so the parts share a quantiser, and one part's codes in memory at a time."""
    bounds = part_bounds(embeddings.shape[0], cfg)
    trained = []

    def build_part(start: int, stop: int) -> faiss.Index:
        if not trained:
            trained.append(trained_index(embeddings, cfg))
        return add_rows(faiss.clone_index(trained[0]), embeddings, start, stop)

    files = {}
    for (name, lists, path), (start, stop) in zip(index_files(keys, len(bounds)), bounds):
        files[name] = build.cached(path, lambda: build_part(start, stop), lambda index, tmp: write_index(index, tmp, path),
                                   lambda p: lists_path(p).exists() and verified_digest(lists_path(p)))[1]
        if lists_path(path).exists():
            files[lists] = verified_digest(lists_path(path))
    return files


def _verified(paths: Dict[str, Path], names) -> Dict[str, str] | None:
    """The files' digests if every one is there and intact, else None (they are written again, together)."""
    digests = {}
    for name in names:
        found = intact(paths[name])
        if found is None:
            return None
        digests[name] = found[1]
    return digests


def _write_rows(units: List[tuple], paths: Dict[str, Path], domains: List[str], tokens_dtype: np.dtype, dim: int,
                emb_dtype) -> Dict[str, str]:
    rows = sum(pq.ParquetFile(table).metadata.num_rows for table, _ in units)
    with atomic_path(paths["tokens"]) as tok_tmp, atomic_path(paths["table"]) as table_tmp, \
            atomic_path(paths["sequences"]) as seq_tmp, atomic_path(paths["embeddings"]) as emb_tmp:
        with open(tok_tmp, "wb") as tokens, open(table_tmp, "wb") as table, open(emb_tmp, "wb") as embeddings:
            table.write(npy_header(POOL_TABLE_DTYPE, (rows,)))
            embeddings.write(npy_header(np.dtype(emb_dtype), (rows, dim)))
            keys_writer, offset = None, 0
            for table_path, emb_path in units:
                if pq.ParquetFile(table_path).metadata.num_rows == 0:  # a unit that kept nothing (a thin corpus)
                    continue
                unit = pq.read_table(table_path, columns=["domain", "doc_id", "start", "tokens"])
                flat = unit.column("tokens").combine_chunks()
                values = flat.values.to_numpy()
                if len(values) and (values.min() < 0 or values.max() > np.iinfo(tokens_dtype).max):
                    raise ValueError(f"token ids out of range for {tokens_dtype}")
                tokens.write(values.astype(tokens_dtype).tobytes())
                length = pc.list_value_length(flat).to_numpy(zero_copy_only=False).astype(np.int64)
                out = np.empty(len(length), POOL_TABLE_DTYPE)
                out["domain"] = pd.Categorical(unit.column("domain").to_numpy(zero_copy_only=False),
                                               categories=domains).codes
                out["length"], out["offset"] = length, offset + np.cumsum(length) - length
                offset += int(length.sum())
                table.write(out.tobytes())
                keys_table = pa.table({"domain": unit.column("domain"), "doc_id": unit.column("doc_id"),
                                       "start": unit.column("start").cast(pa.int64()),
                                       "offset": pa.array(out["offset"]), "length": pa.array(length)})
                keys_writer = keys_writer or pq.ParquetWriter(seq_tmp, keys_table.schema)
                keys_writer.write_table(keys_table)
                vectors = np.load(emb_path, mmap_mode="r")
                embeddings.write(np.ascontiguousarray(vectors, dtype=emb_dtype).tobytes())
            if keys_writer is None:
                raise UserError("the data space holds no pool sequence: add text or lower data.min_length")
            keys_writer.close()
        digests = {name: file_digest(tmp) for name, tmp in
                   (("tokens", tok_tmp), ("table", table_tmp), ("sequences", seq_tmp), ("embeddings", emb_tmp))}
    for name, digest in digests.items():
        write_checksum(paths[name], digest)
    return digests
