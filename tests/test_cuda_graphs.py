"""The captured engine against the eager one. On a CPU the graphs are emulated (the recorded functions run
again on each replay: same static buffers, padding, in-place state and step order); tests marked `cuda`
capture real CUDA graphs and run wherever CUDA is present."""
import logging
import math

import pytest
import torch

from hullft.compose import compose_config
from hullft.engine.cuda_graphs import CapturedLogits
from hullft.engine.finetune import FinetuneEngine, graphs_wanted
from hullft.models import load_model
from hullft.scoring.bpb import score_text
from hullft.engine.train_steps import bucket_length, padded

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
WHERE = [pytest.param("cpu", True, id="cpu-emulated"),
         pytest.param("cuda", False, id="cuda-graphs", marks=[pytest.mark.cuda, CUDA])]


def tiny_model(device="cpu", dtype="fp32"):
    loaded = load_model(compose_config(["model=tiny", f"model.device={device}", f"model.dtype={dtype}"]).model)
    for module in loaded.model.modules():  # padding changes dropout's random draws: compare without dropout
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return loaded


def engine_cfg(*overrides, engine="hullft"):
    return compose_config([f"engine={engine}", *[f"engine.{o}" for o in overrides]]).engine


def sequences():
    g = torch.Generator().manual_seed(0)
    return [torch.randint(3, 250, (n,), generator=g).tolist() for n in (37, 128, 200, 90)]


def weights(model):
    return [p.detach().float().clone() for p in model.parameters()]


def close(a, b, rel):
    """The weights as one vector within `rel` in relative norm, and no weight off by more than `rel`.
    (Per-tensor relative error is the wrong yardstick: the attention key bias has a gradient that is zero
    in exact arithmetic, so Adam moves it by about lr * sign(rounding noise) in either engine.)"""
    diff = torch.sqrt(sum(((x - y) ** 2).sum() for x, y in zip(a, b)))
    size = torch.sqrt(sum((y ** 2).sum() for y in b))
    worst = max(float((x - y).abs().max()) for x, y in zip(a, b))
    return float(diff / size) <= rel and worst <= rel


def test_bucket_lengths():
    assert [bucket_length(n, 128, 1024) for n in (1, 127, 128, 129, 1000, 1024)] == [128] * 3 + [256, 1024, 1024]
    assert bucket_length(300, 128, 320) == 320  # capped at the model's context


def test_padding_to_a_bucket_leaves_loss_and_gradients_unchanged():
    loaded = tiny_model()
    model, seq = loaded.model, sequences()[0]

    def grads(ids, labels):
        model.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters()]

    plain_loss, plain = grads(torch.tensor([seq]), torch.tensor([seq]))
    ids, labels = padded(seq, bucket_length(len(seq), 128, 512))
    assert ids.shape[1] == 128
    pad_loss, pad = grads(ids, labels)
    assert abs(plain_loss - pad_loss) < 1e-6
    assert all(torch.allclose(a, b, rtol=1e-6, atol=1e-6) for a, b in zip(plain, pad))


@pytest.mark.parametrize("device, emulate", WHERE)
@pytest.mark.parametrize("engine, counts, extra", [("hullft", [3, 2, 1, 2], []), ("ttt_nn", [1, 1, 1, 1], []),
                                                    ("hullft", [2, 3, 1, 1], ["lora=true", "lr=1e-3"])])
def test_captured_equals_eager(device, emulate, engine, counts, extra):
    seqs = sequences()
    runs = {}
    for captured in (False, True):
        loaded = tiny_model(device)
        cfg = engine_cfg(f"cuda_graphs={str(captured).lower()}", *extra, engine=engine)
        eng = FinetuneEngine(loaded, cfg, emulate_graphs=captured and emulate)
        assert eng.captured == captured
        first = eng.finetune(seqs, counts, picks=None)
        after_first = weights(eng.model)
        eng.reset()
        second = eng.finetune(seqs[::-1], counts)  # a second query on the reset model and optimizer
        runs[captured] = (first, second, after_first, weights(eng.model))
    (e1, e2, ew1, ew2), (c1, c2, cw1, cw2) = runs[False], runs[True]
    for e, c in ((e1, c1), (e2, c2)):
        assert (e.fwd_bwd, e.opt_steps, e.tokens) == (c.fwd_bwd, c.opt_steps, c.tokens)
        assert math.isclose(e.mean_loss, c.mean_loss, rel_tol=1e-5)
    assert close(ew1, cw1, 1e-5) and close(ew2, cw2, 1e-5)


@pytest.mark.parametrize("device, emulate", WHERE)
def test_captured_reset_is_bit_exact_and_divergence_spares_the_next_query(device, emulate):
    loaded = tiny_model(device)
    before = weights(loaded.model)
    eng = FinetuneEngine(loaded, engine_cfg("cuda_graphs=true", "refresh_interval=1", "lr=1e-2"),
                         emulate_graphs=emulate)
    assert all(torch.equal(a, b) for a, b in zip(before, weights(loaded.model)))  # capture's warm-up undone
    seqs = sequences()
    eng.finetune(seqs[2:], [3])
    expected = weights(loaded.model)
    eng.reset()
    assert all(torch.equal(a, b) for a, b in zip(before, weights(loaded.model)))
    with torch.no_grad():
        loaded.model.lm_head.weight.mul_(float("nan"))  # a blow-up: every loss is NaN
    result = eng.finetune(seqs, [2, 2])
    assert result.diverged and result.opt_steps == 0 and result.fwd_bwd == 1
    eng.reset()
    eng.finetune(seqs[2:], [3])
    assert all(torch.equal(a, b) for a, b in zip(expected, weights(loaded.model)))


@pytest.mark.cuda
@CUDA
def test_captured_bf16_follows_eager_within_bf16_noise():
    seqs, runs = sequences(), []
    for captured in (False, True):
        loaded = tiny_model("cuda", "bf16")
        eng = FinetuneEngine(loaded, engine_cfg(f"cuda_graphs={str(captured).lower()}"))
        runs.append((eng.finetune(seqs, [2, 1, 1, 1]), weights(loaded.model)))
    (e, ew), (c, cw) = runs
    assert (e.fwd_bwd, e.opt_steps) == (c.fwd_bwd, c.opt_steps)
    assert math.isclose(e.mean_loss, c.mean_loss, rel_tol=1e-2)
    assert close(ew, cw, 1e-2)


@pytest.mark.parametrize("device, emulate", WHERE)
def test_captured_scoring_equals_eager(device, emulate):
    loaded = tiny_model(device)
    text = "In the beginning God created the heaven and the earth. " * 12
    forward = CapturedLogits(loaded.model, loaded.dtype, loaded.device, 128, loaded.context_length, emulate)
    for overrides in (["eval.window=256"], ["eval.window=100"], ["eval=first_window", "eval.window=50"]):
        cfg = compose_config(overrides).eval
        eager, captured = score_text(loaded, text, cfg), score_text(loaded, text, cfg, forward)
        assert captured.tokens == eager.tokens and captured.bytes == eager.bytes
        assert abs(captured.bpb - eager.bpb) < 1e-6


def test_graph_settings_and_eager_fallbacks(caplog):
    assert [graphs_wanted(v) for v in ("auto", True, "false", "TRUE")] == [None, True, False, True]
    with pytest.raises(ValueError, match="engine.cuda_graphs"):
        graphs_wanted("sometimes")
    loaded = tiny_model()
    assert not FinetuneEngine(loaded, engine_cfg()).captured  # auto on a CPU: eager, silently
    with caplog.at_level(logging.WARNING):
        assert not FinetuneEngine(loaded, engine_cfg("cuda_graphs=true")).captured
    assert "run eagerly" in caplog.text and "not CUDA" in caplog.text


@pytest.mark.cuda
@CUDA
def test_micro_batches_run_eagerly_with_a_notice(caplog):
    with caplog.at_level(logging.WARNING):
        eng = FinetuneEngine(tiny_model("cuda"), engine_cfg("batch_size=2"))
    assert not eng.captured and "engine.batch_size=2" in caplog.text


def test_the_cuda_benchmark_runs_its_code_path_on_a_cpu():
    from benchmarks import bench_engine_cuda

    df = bench_engine_cuda.main(["--device", "cpu", "--emulate", "--models", "tiny", "--tokens", "40",
                                 "--steps", "1", "--dtype", "fp32"])
    assert len(df) == 1 and (df[["eager_ms", "captured_ms", "floor_ms"]] > 0).all(axis=None)
