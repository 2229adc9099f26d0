"""The data space a job retrieves from: held-out queries, the pool's token store, its embeddings and a search.

Loaded from the manifest a build writes (build.py); built first, in this process, where it is missing.
Its `key` is a hash of the content of every file, so results are identified by what they were measured
on (hullft/records.py). At query time only the text of the queries a job runs is in memory: tokens are
memory-mapped, embeddings read row by row from disk.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hullft.cache import checksum_path, content_hash, verified_digest
from hullft.config import DataConfig
from hullft.data import build, stages
from hullft.data.embeddings import EmbeddingFile
from hullft.data.files import one_builder
from hullft.data.index import joined, lists_path, make_search, read_index
from hullft.data.merge import index_files, space_paths
from hullft.data.token_store import TokenStore
from hullft.errors import UserError


@dataclass
class DataSpace:
    queries: pd.DataFrame    # domain, source, doc_id of the held-out documents; their text: with_text()
    pool: TokenStore         # training sequences: tokens(row), domains(rows), lengths; memory-mapped
    embeddings: EmbeddingFile  # (len(pool), d) unit rows on disk, fp32 or fp16: embeddings[rows]
    search: Callable         # search(query, k) -> (scores, rows)
    key: str
    cfg: DataConfig
    keys: build.Keys

    def with_text(self, queries: pd.DataFrame) -> pd.DataFrame:
        """These query documents with their text, read from disk for them alone: a job keeps the text of the
        queries it runs, not of every held-out document (a tenth of a corpus)."""
        f = pq.ParquetFile(build.root() / f"queries-{self.keys.docs}.parquet")
        rows = np.flatnonzero(np.isin(f.read(columns=["doc_id"]).column("doc_id").to_numpy(zero_copy_only=False),
                                      list(queries.doc_id)))
        bounds = np.cumsum([f.metadata.row_group(g).num_rows for g in range(f.num_row_groups)])
        texts = {}
        for g in np.unique(np.searchsorted(bounds, rows, side="right")):  # only the row groups holding them
            group = f.read_row_group(int(g), columns=["doc_id", "text"])
            texts.update(zip(group.column("doc_id").to_pylist(), group.column("text").to_pylist()))
        return queries.assign(text=queries.doc_id.map(texts).astype(object))

    def pool_keys(self, rows=None) -> pd.DataFrame:
        """domain, doc_id, start of every pool row, or of these (read from disk; a job does not hold them)."""
        keys = pd.read_parquet(build.root() / f"pool-{self.keys.seq}.parquet", columns=["domain", "doc_id", "start"])
        return keys if rows is None else keys.iloc[np.asarray(rows)].reset_index(drop=True)

    def candidates(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.embeddings[rows], dtype=np.float32)

    def stats(self) -> pd.DataFrame:
        docs = pq.ParquetFile(build.documents_path(self.cfg, self.keys))
        parts = []  # a row group at a time: never the corpus' text in memory
        for g in range(docs.num_row_groups):
            group = docs.read_row_group(g, columns=["domain", "source", "text"])
            parts.append(pd.DataFrame({"domain": group.column("domain").to_pandas(),
                                       "source": group.column("source").to_pandas(),
                                       "bytes": pc.binary_length(group.column("text").cast(pa.binary()))
                                       .to_pandas()}))
        docs = pd.concat(parts, ignore_index=True)
        table = docs.groupby("domain").agg(documents=("source", "size"), sources=("source", "nunique"),
                                           bytes=("bytes", "sum"))
        table["query_documents"] = self.queries.groupby("domain").size()
        codes, names = np.asarray(self.pool.codes, np.int64), self.pool.domain_names
        table["pool_sequences"] = pd.Series(np.bincount(codes, minlength=len(names)), index=names)
        table["pool_tokens"] = pd.Series(np.bincount(codes, weights=self.pool.lengths, minlength=len(names))
                                         .astype(np.int64), index=names)
        return table.fillna(0).astype(int)


class Damaged(ValueError):
    """A file of the space is missing, changed since it was written, or unreadable; the message names it."""


def space_files(keys: build.Keys, manifest: dict) -> dict:
    """name -> path of every file a job reads: token store, pool table and keys, embeddings, index file(s) and
    their lists (the queries file and the manifest besides)."""
    paths = space_paths(keys)
    for name, lists, path in index_files(keys, manifest.get("index_parts", 1)):
        paths[name] = path
        if lists in manifest["files"]:
            paths[lists] = lists_path(path)
    return paths


def _manifest(keys: build.Keys) -> dict:
    path = build.manifest_path(keys)
    try:
        manifest = json.loads(path.read_text())
        manifest["files"], manifest["domains"], manifest["dim"]  # noqa: B018 - the keys a job needs
        return manifest
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise Damaged(f"{path.name} cannot be read ({type(e).__name__})") from None


def _read_index(path):
    try:
        return read_index(path)
    except RuntimeError as e:  # faiss' own errors
        raise Damaged(f"{path.name} cannot be read by faiss ({str(e).strip().splitlines()[-1][:100]})") from None


def _load(cfg: DataConfig, keys: build.Keys) -> DataSpace:
    manifest = _manifest(keys)
    paths = space_files(keys, manifest)
    for name, path in paths.items():
        try:
            digest = verified_digest(path)
        except (OSError, ValueError) as e:
            raise Damaged(f"{path.name}: {type(e).__name__ if isinstance(e, OSError) else e}") from None
        if digest != manifest["files"].get(name):
            raise Damaged(f"{path.name} is not the file the manifest names")
    indexes = index_files(keys, manifest.get("index_parts", 1))
    queries_digest = build.queries(cfg, keys, load=False)[1]
    queries = pd.read_parquet(build.root() / f"queries-{keys.docs}.parquet", columns=["domain", "source", "doc_id"])
    # the pool table is memory-mapped; doc_id and start stay on disk (pool_keys)
    pool = TokenStore(paths["tokens"], paths["table"], manifest["domains"], np.dtype(manifest["token_dtype"]))
    embeddings = EmbeddingFile(paths["embeddings"])
    if embeddings.shape != (len(pool), manifest["dim"]):
        raise Damaged(f"embeddings have shape {embeddings.shape}, expected {(len(pool), manifest['dim'])}")
    index = joined([_read_index(path) for _, _, path in indexes])
    if index.ntotal != len(pool):
        raise Damaged(f"index holds {index.ntotal} rows, expected {len(pool)}")
    key = content_hash(queries_digest, manifest["files"])
    return DataSpace(queries, pool, embeddings, make_search(index, embeddings, cfg), key, cfg, keys)


def load_data_space(cfg: DataConfig, tokenizer, tokenizer_fingerprint: str, embedder) -> DataSpace:
    """The data space for this recipe, tokenizer and embedder: loaded, or built here first."""
    keys = build.Keys.of(cfg, tokenizer_fingerprint, embedder.fingerprint)
    if build.manifest_path(keys).exists():
        try:
            return _load(cfg, keys)
        except (OSError, ValueError):
            pass  # judged again under the build lock: another process may be rebuilding it
    with one_builder(f".build-{keys.index}.lock", f"data space {keys.index}"):
        if build.manifest_path(keys).exists():
            try:
                return _load(cfg, keys)  # another process built it while this one waited
            except (OSError, ValueError) as e:
                print(f"data space {keys.index} is damaged ({str(e).splitlines()[0]}); rebuilding its files",
                      file=sys.stderr)
                _discard(keys)
        stages.build_all(cfg, keys, tokenizer, embedder)
    try:
        return _load(cfg, keys)
    except (OSError, ValueError) as e:
        raise UserError(f"data space {keys.index} is still damaged after a rebuild ({str(e).splitlines()[0]}); "
                        f"delete {build.root()} (or run `make clean-cache`) and run again") from None


def _discard(keys: build.Keys) -> None:
    """The manifest and every file of the space (their checksums too), so the merge writes them anew from the
    units, and the queries file from the documents."""
    root = build.root()
    paths = list(space_paths(keys).values()) + [root / f"queries-{keys.docs}.parquet"]
    paths += sorted(root.glob(f"index-{keys.index}*.faiss")) + sorted(root.glob(f"index-{keys.index}*.ivfdata"))
    for path in paths:
        for f in (path, checksum_path(path)):
            f.unlink(missing_ok=True)
    build.manifest_path(keys).unlink(missing_ok=True)
