"""engine.compile: the compiled training step equals the eager one; `auto` compiles only where it pays."""
import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from hullft.compose import compose_config
from hullft.config import DType
from hullft.engine import compiled as compiled_module
from hullft.engine.compiled import CompiledSteps, why_not_compiled
from hullft.engine.finetune import FinetuneEngine
from hullft.models import load_model
from hullft.runner import run_job
from hullft.scoring.bpb import score_text

TEXT = "Compiled and eager steps must agree: the same weights after the same steps. " * 4
SAME = ["query_id", "n", "fwd_bwd", "opt_steps", "train_tokens", "diverged"]


def finetuned(compile_setting, refresh_interval):
    cfg = compose_config(["model=tiny", "engine.lr=1e-3", f"engine.compile={compile_setting}",
                          f"engine.refresh_interval={refresh_interval}"])
    loaded = load_model(cfg.model)
    engine = FinetuneEngine(loaded, OmegaConf.to_object(cfg.engine))
    rng = np.random.default_rng(0)
    seqs = [rng.integers(3, 250, size=n).tolist() for n in (37, 90, 61)]
    result = engine.finetune(seqs, [3, 2, 1])
    score = score_text(loaded, TEXT, cfg.eval)
    weights = [p.detach().clone() for p in loaded.model.parameters()]
    engine.reset()
    return engine, result, score, weights


@pytest.mark.parametrize("refresh_interval", [1, 2])
def test_compiled_steps_equal_eager_ones_over_several_lengths(refresh_interval):
    """Three sequence lengths through one dynamic graph, with and without Gradient Reuse."""
    eager, eager_result, eager_score, eager_weights = finetuned("false", refresh_interval)
    compiled, result, score, weights = finetuned("true", refresh_interval)
    assert isinstance(compiled.steps, CompiledSteps) and not eager.compiled
    assert (result.fwd_bwd, result.opt_steps, result.tokens) == \
        (eager_result.fwd_bwd, eager_result.opt_steps, eager_result.tokens)
    assert score.nll_nats == pytest.approx(eager_score.nll_nats, rel=1e-5)
    for a, b in zip(weights, eager_weights):  # Adam turns rounding in near-zero gradients into steps of ~lr/10
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    base = score_text(compiled.loaded, TEXT, compose_config(["model=tiny"]).eval)
    fresh = score_text(load_model(compose_config(["model=tiny"]).model), TEXT, compose_config(["model=tiny"]).eval)
    assert base.nll_nats == fresh.nll_nats  # reset after compiled steps is bit-exact


@pytest.mark.parametrize("method", ["finetune", "finetune+incontext", "dynamic_eval"])
def test_every_training_method_records_the_same_with_compiled_steps(tmp_path, tiny_overrides, method):
    args = [*tiny_overrides, "queries_per_domain=1", "selector=hullft", "budget=4", "checkpoints=[2]",
            "engine.lr=1e-4", f"method={method}"]
    if method == "dynamic_eval":
        args = [a for a in args if not a.startswith(("checkpoints", "selector"))] + ["method.segment=64"]
    if method == "finetune+incontext":  # two sequences of up to 96 tokens (and separators) in 200
        args = [a for a in args if not a.startswith(("budget", "checkpoints"))]
        args += ["budget=2", "checkpoints=[1]", "method.context_tokens=200"]
    eager = run_job(compose_config(args + ["engine.compile=false"]), tmp_path / "eager")
    compiled = run_job(compose_config(args + ["engine.compile=true"]), tmp_path / "compiled")
    assert compiled.compiled.all() and not eager.compiled.any()
    a, b = (df.sort_values(["query_id", "n"]).reset_index(drop=True) for df in (eager, compiled))
    np.testing.assert_allclose(b.bpb, a.bpb, rtol=1e-5)
    pd.testing.assert_frame_equal(a[SAME], b[SAME], check_dtype=False)


@pytest.mark.parametrize("setting, dtype, device, steps, warm, expect", [
    ("auto", DType.bf16, "cpu", 10_000, False, None),
    ("auto", DType.bf16, "cpu", 300, False, "do not pay for a cold compile"),
    ("auto", DType.bf16, "cpu", 300, True, None),
    ("auto", DType.bf16, "cpu", 50, True, "do not pay for a warm compile"),
    ("auto", DType.fp32, "cpu", 10_000, True, "compiles bf16 steps only"),
    ("auto", DType.bf16, "cuda", 10_000, True, "CUDA runs captured graphs"),
    ("true", DType.fp32, "cpu", 1, False, None),
    ("false", DType.bf16, "cpu", 10_000, True, "engine.compile=false"),
])
def test_auto_compiles_where_the_steps_pay_for_it(monkeypatch, tmp_path, setting, dtype, device, steps, warm,
                                                  expect):
    monkeypatch.setenv("HULLFT_CACHE", str(tmp_path))
    if warm:
        marker = compiled_module._marker("model", dtype)
        marker.parent.mkdir(parents=True)
        marker.touch()
    why = why_not_compiled(setting, "model", dtype, torch.device(device), steps, 1)
    assert why is None if expect is None else expect in why
