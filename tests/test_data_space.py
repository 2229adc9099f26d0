"""The data space at scale: streamed documents, the token store, sharded builds, indexes and GPU-style search."""
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hullft.compose import compose_config
from hullft.data import build as stages
from hullft.data import load_data_space
from hullft.data.documents import build_documents, corpus_sources, cut_document, unit_hash
from hullft.data.index import FaissSearch, TorchExactSearch, build_index, recall_at_k
from hullft.data import embeddings as embedding_file
from hullft.data.embeddings import EmbeddingFile, EmbeddingFileWriter
from hullft.data.token_store import TokenFileWriter, TokenStore, token_dtype, with_offsets
from hullft.embedder import Embedder
from hullft.errors import UserError
from hullft.models import load_model

REPO = Path(__file__).resolve().parent.parent


def reference_documents(cfg) -> pd.DataFrame:
    """The whole corpus in memory, then sorted and cut: what the streamed build must equal."""
    rows, seen = [], set()
    for domain, source, text in corpus_sources(cfg):
        if cfg.domains and domain not in cfg.domains:
            continue
        for i, piece in enumerate(cut_document(text, cfg.max_doc_chars)[:cfg.max_docs_per_source]):
            digest = hashlib.sha256(piece.encode()).digest()
            if digest not in seen:
                seen.add(digest)
                rows.append((domain, source, f"{source}#{i}", piece))
    docs = pd.DataFrame(rows, columns=["domain", "source", "doc_id", "text"])
    docs["order"] = [unit_hash(cfg.seed, "doc", d) for d in docs.doc_id]
    docs = docs.sort_values(["domain", "order"]).groupby("domain").head(cfg.max_docs_per_domain)
    docs["split"] = ["query" if unit_hash(cfg.seed, "split", d, s) < cfg.query_fraction else "pool"
                     for d, s in zip(docs.domain, docs.source)]
    return docs.drop(columns="order").reset_index(drop=True)


@pytest.mark.parametrize("cap", [12, 10_000])
def test_streamed_documents_equal_the_in_memory_reference(tiny_overrides, cap):
    cfg = compose_config([*tiny_overrides, f"data.max_docs_per_domain={cap}", "data.query_fraction=0.3"]).data
    pd.testing.assert_frame_equal(build_documents(cfg), reference_documents(cfg))


@pytest.mark.parametrize("vocab, high", [(300, 299), (70_000, 69_999)])
def test_token_store_round_trip(tmp_path, vocab, high):
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, high + 1, size=int(n)).tolist() for n in rng.integers(1, 50, size=40)]
    seqs[3][0] = high
    dtype = token_dtype(vocab)
    assert dtype == (np.uint16 if vocab <= 65536 else np.uint32)
    table = with_offsets(pd.DataFrame({"domain": ["d"] * len(seqs)}), np.array([len(s) for s in seqs]))
    with TokenFileWriter(tmp_path / "t.bin", int(table.length.sum()), dtype) as out:
        for i in rng.permutation(len(seqs)):  # sequences arrive in any order, as units do
            out.put(table.offset[i], np.array(seqs[i]))
    store = TokenStore(tmp_path / "t.bin", table, dtype)
    assert [store.tokens(i) for i in range(len(store))] == seqs
    assert isinstance(store.flat, np.memmap)
    with pytest.raises(ValueError, match="the table needs"):
        TokenStore(tmp_path / "t.bin", table.iloc[:-1], dtype)
    with pytest.raises(ValueError, match="out of range"), TokenFileWriter(tmp_path / "u.bin", 1, dtype) as out:
        out.put(0, np.array([np.iinfo(dtype).max + 1]))


def test_embedding_file_round_trip(tmp_path, monkeypatch):
    monkeypatch.setattr(embedding_file, "READ_ROWS", 64)  # several read chunks
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float16)
    with EmbeddingFileWriter(tmp_path / "e.npy", 300, 8, np.float16) as out:
        for i in rng.permutation(300):
            out.put(i, x[i])
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), x)  # a valid .npy, memory-mappable by jobs
    emb = EmbeddingFile(tmp_path / "e.npy")
    assert emb.shape == (300, 8) and len(emb) == 300
    np.testing.assert_array_equal(emb[10:250], x[10:250])
    rows = rng.choice(300, size=40, replace=False)
    np.testing.assert_array_equal(emb[rows], x[rows])  # scanned in chunks
    few = rng.choice(300, size=3, replace=False)  # unsorted, one read each
    np.testing.assert_array_equal(emb[few], x[few])


def test_a_job_holds_no_pool_text_and_reads_tokens_from_disk(tiny_overrides):
    cfg = compose_config([*tiny_overrides, "data.embedding_dtype=fp16"])
    loaded = load_model(cfg.model)
    space = load_data_space(cfg.data, loaded.tokenizer, loaded.fingerprint, Embedder(cfg.embedder))
    assert not {"text", "doc_id"} & set(space.pool.table) and not hasattr(space, "documents")
    assert isinstance(space.embeddings, EmbeddingFile) and space.embeddings.dtype == np.float16
    rows = np.arange(5)
    candidates = space.candidates(rows)
    assert candidates.dtype == np.float32 and np.allclose(np.linalg.norm(candidates, axis=1), 1, atol=1e-3)
    chunked = stages.chunk(stages.documents(cfg.data, space.keys).query("split == 'pool'"), loaded.tokenizer,
                           cfg.data)
    first = space.pool_keys().iloc[0]
    match = chunked[(chunked.doc_id == first.doc_id) & (chunked.start == first.start)].tokens.iloc[0]
    assert space.pool.tokens(0) == list(match)


def _cli(args, cache: Path):
    env = {**os.environ, "HULLFT_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "hullft.data", *args], capture_output=True, text=True, env=env,
                          cwd=cache.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_sharded_build_merges_into_the_one_process_build(tmp_path, tiny_overrides):
    overrides = [*tiny_overrides, "data.unit_docs=12"]
    _cli(["build", *overrides], tmp_path / "one")
    assert "pool sequences in" in _cli(["plan", *overrides], tmp_path / "sharded").stdout
    _cli(["build", "-m", "data.shard=0,1", "data.num_shards=2", "hydra/launcher=joblib", *overrides],
         tmp_path / "sharded")
    assert not list((tmp_path / "sharded" / "dataspace").glob("space-*.json"))  # not merged yet
    out = _cli(["merge", *overrides], tmp_path / "sharded").stdout
    assert "pool sequences" in out
    one, sharded = tmp_path / "one" / "dataspace", tmp_path / "sharded" / "dataspace"
    assert len(list(one.glob("unit-*.parquet"))) >= 3  # several units, so the shards shared the work
    for pattern in ("pool-*.parquet", "tokens-*.bin", "embeddings-*.npy", "index-*.faiss", "queries-*.parquet"):
        (a,), (b,) = sorted(one.glob(pattern)), sorted(sharded.glob(pattern))
        assert a.name == b.name and a.read_bytes() == b.read_bytes(), pattern


def test_index_by_factory_string_and_recall(tiny_overrides):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    queries = x[rng.choice(2000, size=20, replace=False)] + 0.05 * rng.normal(size=(20, 32)).astype(np.float32)
    flat_cfg = compose_config(["data.index=flat"]).data
    flat = FaissSearch(build_index(x, flat_cfg), flat_cfg)
    assert recall_at_k(flat, x, queries, 10) == 1.0
    ivf_cfg = compose_config(["data.index='IVF16,Flat'", "data.ivf_nprobe=16", "data.index_train_size=800"]).data
    ivf_index = build_index(x, ivf_cfg)
    assert ivf_index.ntotal == 2000 and ivf_index.nlist == 16
    assert recall_at_k(FaissSearch(ivf_index, ivf_cfg), x, queries, 10) == 1.0  # every list probed
    narrow = compose_config(["data.index='IVF16,Flat'", "data.ivf_nprobe=1"]).data
    assert recall_at_k(FaissSearch(build_index(x, narrow), narrow), x, queries, 10) < 1.0
    pq = compose_config(["data.index='IVF8,PQ8'", "data.ivf_nprobe=8"]).data
    assert 0.3 < recall_at_k(FaissSearch(build_index(x, pq), pq), x, queries, 10) <= 1.0
    # PQ codes propose, the stored vectors decide: rescoring every row IVF-PQ returns gives the exact top-k
    rerank = compose_config(["data.index='IVF8,PQ8'", "data.ivf_nprobe=8", "data.index_rerank=2000"]).data
    exact = FaissSearch(build_index(x, flat_cfg), flat_cfg)
    for q in queries[:5]:
        (s1, r1), (s2, r2) = FaissSearch(build_index(x, rerank), rerank, x)(q, 10), exact(q, 10)
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_allclose(s1, s2, rtol=1e-5)
    with pytest.raises(UserError, match="data.index=Nonsense42: faiss cannot build"):
        build_index(x, compose_config(["data.index=Nonsense42"]).data)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[
    pytest.mark.cuda, pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs CUDA")])])
def test_torch_exact_search_equals_faiss_flat(device):
    import torch

    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 16)).astype(np.float32)
    q = rng.normal(size=16).astype(np.float32)
    cfg = compose_config([]).data
    s1, r1 = FaissSearch(build_index(x, cfg), cfg)(q, 25)
    s2, r2 = TorchExactSearch(x, torch.device(device))(q, 25)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_allclose(s1, s2, rtol=1e-5)
