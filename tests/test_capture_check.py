"""A captured graph is checked against eager before it is used; a fault (a wrong result or an error while
capturing) makes the job run eagerly with one line. On a CPU through the emulated capture, with injected faults."""
import logging

import pytest
import torch

from hullft.engine import cuda_graphs
from hullft.engine.capture_check import probe_sequence, relative_error
from hullft.engine.cuda_graphs import CapturedLogits, CapturedSteps
from hullft.engine.finetune import FinetuneEngine
from hullft.compose import compose_config
from hullft.scoring.bpb import score_text
from hullft.engine.train_steps import bucket_length
from tests.test_cuda_graphs import close, engine_cfg, sequences, tiny_model, weights

TEXT = "In the beginning God created the heaven and the earth. " * 12


def eager_run():
    loaded = tiny_model()
    eng = FinetuneEngine(loaded, engine_cfg("cuda_graphs=false"))
    return eng.finetune(sequences(), [2, 1, 1, 2]), weights(loaded.model)


def test_probe_falls_in_the_checked_bucket_and_is_padded_where_it_can_be():
    for length, bucket, context in ((128, 128, 1024), (256, 128, 1024), (1000, 64, 1000), (8, 8, 64)):
        probe = probe_sequence(length, bucket, context, 300)
        assert bucket_length(len(probe), bucket, context) == length and len(probe) < length
    assert probe_sequence(128, 128, 1024, 300) == probe_sequence(128, 128, 1024, 300)  # seeded


def test_relative_error():
    a = [torch.ones(3), torch.zeros(2)]
    assert relative_error(a, a) == 0.0
    assert relative_error([torch.ones(4) * 1.01], [torch.ones(4)]) == pytest.approx(0.01, rel=1e-4)


def test_a_faithful_capture_passes_its_check(caplog):
    loaded = tiny_model()
    with caplog.at_level(logging.WARNING):
        eng = FinetuneEngine(loaded, engine_cfg("cuda_graphs=auto"), emulate_graphs=True)
        result = eng.finetune(sequences(), [2, 1, 1, 2])
    assert eng.captured and "eagerly" not in caplog.text
    e, ew = eager_run()
    assert (e.fwd_bwd, e.opt_steps) == (result.fwd_bwd, result.opt_steps) and close(ew, weights(loaded.model), 1e-5)


def wrong_gradients(monkeypatch):
    """A capture that computes the loss right and one gradient 10% off (as a broken kernel in a graph would)."""
    made = CapturedSteps._forward_backward_fn

    def faulty(self, ids, labels):
        body = made(self, ids, labels)

        def wrong():
            out = body()
            self.grads[0].mul_(1.1)
            return out
        return wrong
    monkeypatch.setattr(CapturedSteps, "_forward_backward_fn", faulty)


def capture_error(monkeypatch, on: str):
    """An error while capturing the forward/backward or the optimizer step (`on`)."""
    real = cuda_graphs._Recorded.__init__

    def failing(self, fn, *args, **kwargs):
        if getattr(fn, "__name__", "") == on:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore detail")
        real(self, fn, *args, **kwargs)
    monkeypatch.setattr(cuda_graphs._Recorded, "__init__", failing)


@pytest.mark.parametrize("fault, says", [
    (wrong_gradients, "differs from eager"),
    (lambda mp: capture_error(mp, "body"), "capturing the 128-token training step failed (RuntimeError: CUDA error"),
    (lambda mp: capture_error(mp, "_optimizer_step"), "capturing the optimizer step failed")])
def test_a_faulty_captured_step_falls_back_to_eager_with_one_line(monkeypatch, caplog, fault, says):
    fault(monkeypatch)
    loaded = tiny_model()
    with caplog.at_level(logging.WARNING):
        eng = FinetuneEngine(loaded, engine_cfg("cuda_graphs=auto"), emulate_graphs=True)
        result = eng.finetune(sequences(), [2, 1, 1, 2])
        eng.reset()
        eng.finetune(sequences(), [1, 1, 1, 1])  # the next query: no second notice
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and says in warnings[0].getMessage() and "eagerly" in warnings[0].getMessage()
    assert not eng.captured
    eng.reset()
    result = eng.finetune(sequences(), [2, 1, 1, 2])
    e, ew = eager_run()
    assert (e.fwd_bwd, e.opt_steps, e.tokens) == (result.fwd_bwd, result.opt_steps, result.tokens)
    assert close(ew, weights(loaded.model), 1e-6)


def test_a_model_with_dropout_skips_the_step_check_and_says_so(caplog):
    loaded = tiny_model()
    for module in loaded.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.1
    with caplog.at_level(logging.INFO):
        eng = FinetuneEngine(loaded, engine_cfg("cuda_graphs=auto"), emulate_graphs=True)
        eng.finetune(sequences()[:1], [1])
    assert eng.captured and "not checked against eager: the model trains with dropout" in caplog.text


@pytest.mark.parametrize("fault", ["wrong", "error"])
def test_a_faulty_scoring_capture_scores_eagerly_with_one_line(monkeypatch, caplog, fault):
    real_replay, real_init = cuda_graphs._Recorded.replay, cuda_graphs._Recorded.__init__
    if fault == "wrong":
        monkeypatch.setattr(cuda_graphs._Recorded, "replay", lambda self: real_replay(self) * 1.001)
    else:
        def failing(self, fn, *args, **kwargs):
            raise RuntimeError("capture failed")
        monkeypatch.setattr(cuda_graphs._Recorded, "__init__", failing)
    loaded = tiny_model()
    forward = CapturedLogits(loaded.model, loaded.dtype, loaded.device, 128, loaded.context_length, emulate=True)
    cfg = compose_config(["eval.window=256"]).eval
    with caplog.at_level(logging.WARNING):
        forward.prepare(cfg.window)
        captured = score_text(loaded, TEXT, cfg, forward)
    monkeypatch.setattr(cuda_graphs._Recorded, "replay", real_replay)
    monkeypatch.setattr(cuda_graphs._Recorded, "__init__", real_init)
    assert forward.failed and len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    assert "scores eagerly" in caplog.text
    assert captured.bpb == pytest.approx(score_text(loaded, TEXT, cfg).bpb, rel=1e-6)

