"""The data space: streamed documents, the token store, the embedding file, indexes and GPU-style search."""
import hashlib

import numpy as np
import pandas as pd
import pytest

from hullft.compose import compose_config
from hullft.data import build as stages
from hullft.data import load_data_space
from hullft.data.documents import cut_document, unit_hash
from tests.oracles import build_documents, build_index, corpus_sources
from hullft.data.index import FaissSearch, TorchExactSearch, recall_at_k
from hullft.data import embeddings as embedding_file
from hullft.data.embeddings import EmbeddingFile, npy_header
from hullft.data.sequences import chunk
from hullft.data.token_store import POOL_TABLE_DTYPE, TokenStore, token_dtype
from hullft.embedder import Embedder
from hullft.errors import UserError
from hullft.models import load_model



def reference_documents(cfg) -> pd.DataFrame:
    """The whole corpus in memory, in one stream, then sorted and cut: what the parallel build must equal."""
    rows, seen = [], set()
    for domain, source, text in corpus_sources(cfg):
        if cfg.domains and domain not in cfg.domains:
            continue
        for i, piece in enumerate(cut_document(text, cfg.max_doc_chars)[:cfg.max_docs_per_source]):
            digest = hashlib.sha256(piece.encode()).digest()
            if digest not in seen:
                seen.add(digest)
                rows.append((domain, source, f"{source}#{i}", piece, len(rows)))
    docs = pd.DataFrame(rows, columns=["domain", "source", "doc_id", "text", "read"])
    docs["order"] = [unit_hash(cfg.seed, "doc", d) for d in docs.doc_id]
    docs = docs.sort_values(["domain", "order", "read"]).groupby("domain").head(cfg.max_docs_per_domain)
    docs = docs.sort_values(["domain", "read"])  # each domain in reading order
    docs["split"] = ["query" if unit_hash(cfg.seed, "split", d, s) < cfg.query_fraction else "pool"
                     for d, s in zip(docs.domain, docs.source)]
    return docs.drop(columns=["order", "read"]).reset_index(drop=True)


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
    lengths = np.array([len(s) for s in seqs])
    table = np.zeros(len(seqs), POOL_TABLE_DTYPE)
    table["length"], table["offset"], table["domain"] = lengths, np.cumsum(lengths) - lengths, np.arange(40) % 2
    np.save(tmp_path / "table.npy", table)
    np.concatenate(seqs).astype(dtype).tofile(tmp_path / "t.bin")
    store = TokenStore(tmp_path / "t.bin", tmp_path / "table.npy", ["even", "odd"], dtype)
    assert [store.tokens(i) for i in range(len(store))] == seqs
    assert list(store.domains([0, 1, 5])) == ["even", "odd", "odd"]
    assert isinstance(store.offsets, np.memmap)
    np.save(tmp_path / "short.npy", table[:-1])
    with pytest.raises(ValueError, match="the table needs"):
        TokenStore(tmp_path / "t.bin", tmp_path / "short.npy", ["even", "odd"], dtype)


def test_embedding_file_round_trip(tmp_path, monkeypatch):
    monkeypatch.setattr(embedding_file, "READ_ROWS", 64)  # several read chunks
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float16)
    with open(tmp_path / "e.npy", "wb") as f:  # written as the merge writes it: a header, then rows in a stream
        f.write(npy_header(np.float16, (300, 8)))
        for part in np.array_split(x, 7):
            f.write(part.tobytes())
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), x)  # a valid .npy
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
    assert not hasattr(space.pool, "table") and not hasattr(space, "documents")
    assert isinstance(space.pool.offsets, np.memmap) and isinstance(space.pool.codes, np.memmap)
    assert isinstance(space.embeddings, EmbeddingFile) and space.embeddings.dtype == np.float16
    rows = np.arange(5)
    candidates = space.candidates(rows)
    assert candidates.dtype == np.float32 and np.allclose(np.linalg.norm(candidates, axis=1), 1, atol=1e-3)
    chunked = chunk(stages.documents(cfg.data, space.keys).query("split == 'pool'"), loaded.tokenizer,
                           cfg.data)
    first = space.pool_keys().iloc[0]
    match = chunked[(chunked.doc_id == first.doc_id) & (chunked.start == first.start)].tokens.iloc[0]
    assert space.pool.tokens(0) == list(match)


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
