import json
import shutil

import numpy as np
import pytest
import zstandard

from hullft.compose import compose_config
from hullft.data import build as stages
from hullft.data import sequences as seqs_
from hullft.data.stages import run_stage
from hullft.data import load_data_space
from hullft.data.documents import cut_document
from tests.oracles import build_documents
from hullft.embedder import Embedder
from hullft.data.jsonl import read_pile_jsonl
from hullft.models import load_model


class CountingEmbedder:
    """The real embedder, counting how many texts it was asked to embed."""

    def __init__(self, cfg):
        self.inner = Embedder(cfg)
        self.dim, self.fingerprint, self.calls = self.inner.dim, self.inner.fingerprint, 0

    def embed(self, texts, progress=False):
        self.calls += len(texts)
        return self.inner.embed(texts)


@pytest.fixture(scope="module")
def setup(tiny_overrides):
    cfg = compose_config(tiny_overrides)
    return cfg, load_model(cfg.model), CountingEmbedder(cfg.embedder)


def build(cfg, setup):
    _, loaded, embedder = setup
    return load_data_space(cfg.data, loaded.tokenizer, loaded.fingerprint, embedder)


def test_jsonl_reader_plain_and_zstd(pile_fixture, tmp_path):
    rows = list(read_pile_jsonl(pile_fixture))
    assert {d for d, _, _ in rows} == {"Github", "Docs", "Licenses"}
    zst = tmp_path / "c.jsonl.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(pile_fixture.read_bytes()))
    assert list(read_pile_jsonl(zst)) == [(d, s.replace(pile_fixture.name, zst.name), t) for d, s, t in rows]


@pytest.mark.parametrize("line,message", [('{"meta": {}}', 'line has no string "text"'),
                                          ('{"text": 5}', 'line has no string "text"'),
                                          ("{not json", "not valid JSON")])
def test_jsonl_bad_line_is_a_one_line_error(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n" + line + "\n")
    with pytest.raises(ValueError, match=message) as e:
        list(read_pile_jsonl(path))
    assert ":2:" in str(e.value) and "\n" not in str(e.value)


def test_missing_file_and_empty_corpus(tmp_path, tiny_overrides):
    with pytest.raises(ValueError, match="does not exist"):
        build_documents(compose_config(tiny_overrides + [f"data.path={tmp_path}/nope.jsonl"]).data)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        build_documents(compose_config(tiny_overrides + [f"data.path={empty}"]).data)


def test_domain_with_one_source_is_skipped_unless_named(tmp_path, tiny_overrides, capsys):
    """A default build leaves out (and says so) a domain it cannot split, e.g. perl_docs without perl-doc."""
    one = json.dumps({"text": "only one document here " * 20, "meta": {"pile_set_name": "X"}}) + "\n"
    path = tmp_path / "one.jsonl"
    path.write_text(one)
    with pytest.raises(ValueError, match="no domain has enough sources"):
        build_documents(compose_config(tiny_overrides + [f"data.path={path}"]).data)
    path.write_text(one + "".join(json.dumps({"text": f"document number {i} " * 20, "meta": {"pile_set_name": "Y"}})
                                  + "\n" for i in range(40)))
    docs = build_documents(compose_config(tiny_overrides + [f"data.path={path}"]).data)
    assert set(docs.domain) == {"Y"} and set(docs.split) == {"pool", "query"}
    assert "domain 'X' has 1 source(s), too few to hold out queries and keep a pool: skipped" in capsys.readouterr().err
    with pytest.raises(ValueError, match="domain 'X' has 1 source.*drop it from data.domains"):
        build_documents(compose_config(tiny_overrides + [f"data.path={path}", "data.domains=[X,Y]"]).data)


def test_unknown_offline_domain():
    with pytest.raises(ValueError, match="unknown domain"):
        build_documents(compose_config(["data.domains=[klingon]"]).data)


def test_cut_document_keeps_all_text_in_bounded_pieces():
    text = "".join(f"line {i} " * (i % 7 + 1) + "\n" for i in range(300)) + "x" * 2500 + "\n"
    pieces = cut_document(text, 1000)
    assert "".join(pieces) == text
    assert max(len(p) for p in pieces) <= 1000


def test_cut_document_with_a_limit_is_the_start_of_the_whole_cut():
    rng = np.random.default_rng(0)
    for _ in range(50):
        lines = ["" if rng.random() < 0.2 else "  " * int(rng.integers(0, 3)) + "x" * int(rng.integers(0, 400))
                 for _ in range(int(rng.integers(0, 60)))]
        text = "\n".join(lines) + ("\n" if rng.random() < 0.5 else "")
        whole = cut_document(text, 300)
        for limit in range(len(whole) + 2):
            assert cut_document(text, 300, limit=limit or None) == (whole[:limit] if limit else whole)


def test_token_ids_equal_the_tokenizers_own_call():
    from transformers import PreTrainedTokenizerFast

    bert = Embedder(compose_config([]).embedder).tokenizer  # its saved backend pads: the Rust path must not
    plain = PreTrainedTokenizerFast(tokenizer_object=bert.backend_tokenizer.__class__.from_str(
        bert.backend_tokenizer.to_str()))
    plain.backend_tokenizer.no_padding()
    plain.backend_tokenizer.no_truncation()
    tokenizers = [bert, plain, load_model(compose_config(["model=tiny"]).model).tokenizer]
    texts = ["def f(x):\n    return x ** 2\n", "Naïve café — ✓ 日本語", "[CLS] a [SEP] [MASK] </s> <pad>", "", " " * 7]
    assert bert.backend_tokenizer.padding is not None and plain.backend_tokenizer.padding is None
    assert not tokenizers[2].is_fast  # the Rust path, the padding backend's and the plain one
    for tokenizer in tokenizers:
        assert seqs_.token_ids(tokenizer, texts) == tokenizer(texts, add_special_tokens=False).input_ids
        assert seqs_.token_ids(tokenizer, []) == []


def test_texts_of_equal_batch_decode():
    from transformers import PreTrainedTokenizerFast

    bert = Embedder(compose_config([]).embedder).tokenizer  # WordPiece, no clean-up: the Rust path
    cleaning = PreTrainedTokenizerFast(tokenizer_object=bert.backend_tokenizer, clean_up_tokenization_spaces=True)
    tiny = load_model(compose_config(["model=tiny"]).model).tokenizer  # not fast
    texts = ["def f(x):\n    return x ** 2 , ok .\n", "Naïve café — ✓ 日本語 ' s", "[CLS] a [SEP] [MASK]", ""]
    sequences = bert(texts).input_ids
    assert cleaning.batch_decode(sequences) != bert.batch_decode(sequences)  # the clean-up is Python's alone
    for tokenizer in (bert, cleaning, tiny):
        sequences = tokenizer(texts, add_special_tokens=True).input_ids
        assert seqs_.texts_of(tokenizer, sequences) == tokenizer.batch_decode(sequences)


def test_split_is_document_disjoint_and_deduplicated(setup, tiny_overrides):
    cfg = setup[0]
    space = build(cfg, setup)
    docs = stages.documents(cfg.data, space.keys)
    assert docs.text.is_unique
    query_sources = set(docs[docs.split == "query"].source)
    pool_sources = set(docs[docs.split == "pool"].source)
    assert query_sources and pool_sources and not query_sources & pool_sources
    query_ids = set(space.queries.doc_id)
    assert not query_ids & set(space.pool_keys().doc_id)
    pool_doc_texts = set(docs[docs.split == "pool"].text)
    assert "text" not in space.queries  # a job reads the text of the queries it runs only
    with_text = space.with_text(space.queries)
    assert list(with_text.text) == list(docs[docs.split == "query"].text)
    assert not pool_doc_texts & set(with_text.text)
    assert set(space.pool.domains(np.arange(len(space.pool)))) == {"Github", "Docs", "Licenses"}
    assert max(space.pool.lengths) <= cfg.data.max_length
    assert space.embeddings.shape == (len(space.pool), 384)
    _, rows = space.search(space.candidates(np.array([3]))[0], 5)
    assert rows[0] == 3 and len(rows) == 5
    stats = space.stats()
    assert stats.bytes.to_dict() == docs.groupby("domain").text.apply(lambda t: sum(len(x.encode()) for x in t)).to_dict()
    assert stats.documents.to_dict() == docs.groupby("domain").size().to_dict()
    assert stats.pool_sequences.sum() == len(space.pool) and (stats.query_documents > 0).all()


def test_cache_is_reused_and_invalidated_by_what_it_depends_on(setup, tiny_overrides):
    cfg, _, embedder = setup
    first = build(cfg, setup)
    calls = embedder.calls
    second = build(cfg, setup)
    assert embedder.calls == calls  # nothing re-embedded
    np.testing.assert_array_equal(first.embeddings, second.embeddings)
    changed = build(compose_config(tiny_overrides + ["data.max_length=80"]), setup)
    assert embedder.calls > calls and len(changed.pool) != 0
    assert max(changed.pool.lengths) <= 80


def test_corrupt_cache_file_is_rebuilt(setup, isolated_cache, capsys):
    cfg = setup[0]
    good = build(cfg, setup)
    good_embeddings = np.array(good.embeddings)  # in RAM: the file under the memory map is damaged in place below
    good_query = good.candidates(np.array([0]))[0]
    for path in (isolated_cache / "dataspace").glob("embeddings-*.npy"):
        path.write_bytes(path.read_bytes()[:100])  # truncated
    for path in (isolated_cache / "dataspace").glob("index-*.faiss"):
        path.write_bytes(b"garbage")
    rebuilt = build(cfg, setup)
    err = capsys.readouterr().err
    assert "is damaged (" in err and ": checksum mismatch" in err and "rebuilding its files" in err
    np.testing.assert_allclose(rebuilt.embeddings, good_embeddings, atol=1e-6)
    assert len(rebuilt.search(good_query, 3)[1]) == 3
    assert not list((isolated_cache / "dataspace").glob(".*.tmp"))  # nothing half-written left behind


def test_units_take_their_sequences_from_the_chunk_stage_or_tokenise_again_alike(setup, tiny_overrides,
                                                                                 isolated_cache, capsys):
    cfg = compose_config(tiny_overrides + ["data.unit_docs=12"])  # several units
    keys = build(cfg, setup).keys
    root = isolated_cache / "dataspace"
    assert not list(root.glob(f"unitseqs-{keys.seq}-*"))  # removed once their unit is embedded
    built = sorted(root.glob(f"unit-{keys.seq}-*.parquet")) + sorted(root.glob(f"unitemb-{keys.emb}-*.npy"))
    assert len(built) >= 6
    before = {p.name: p.read_bytes() for p in built}
    for path in [*built, stages.manifest_path(keys), root / f"plan-{keys.seq}.json"]:
        path.unlink()
    tokenizer = setup[1].tokenizer
    for u in range(stages.unit_count(cfg.data, keys)):
        stages.chunk_unit(cfg.data, keys, u, tokenizer)
    left = {int(p.stem.rsplit("-", 1)[1]): p for p in root.glob(f"unitseqs-{keys.seq}-*.parquet")}
    assert len(left) == len(built) // 2  # the chunk stage leaves every unit its sequences
    left[0].write_bytes(left[0].read_bytes()[:50])  # damaged: tokenised again
    left[1].unlink()  # gone: tokenised again
    build(cfg, setup)
    assert f"unitseqs-{keys.seq}-0.parquet is damaged" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in built} == before
    assert not list(root.glob(f"unitseqs-{keys.seq}-*"))
    run_stage("chunk", cfg.data, keys, tokenizer, None)  # a build run again: embedded units are not tokenised
    assert not list(root.glob(f"unitseqs-{keys.seq}-*"))


def test_changed_corpus_file_rebuilds_documents(setup, tiny_overrides, tmp_path, pile_fixture):
    copy = tmp_path / "copy.jsonl"
    shutil.copy(pile_fixture, copy)
    cfg = compose_config(tiny_overrides + [f"data.path={copy}"])
    before = build(cfg, setup)
    with open(copy, "a") as f:
        f.write(json.dumps({"text": "A brand new licence paragraph. " * 30, "meta": {"pile_set_name": "Licenses"}})
                + "\n")
    after = build(cfg, setup)
    assert len(stages.documents(cfg.data, after.keys)) == len(stages.documents(cfg.data, before.keys)) + 1


@pytest.mark.parametrize("override,message", [("data=nope", "Could not find 'data/nope'"),
                                              ("data.path=/no/such.jsonl", "does not exist")])
def test_data_cli_bad_input_is_one_line(override, message, tiny_overrides):
    import subprocess
    import sys

    args = [a for a in tiny_overrides if not a.startswith("data.path")] + [override]
    proc = subprocess.run([sys.executable, "-m", "hullft.data", "stats", *args], capture_output=True, text=True)
    assert proc.returncode != 0 and message in proc.stderr
    assert "Traceback" not in proc.stderr
