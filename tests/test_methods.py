"""The methods beside finetuning: in-context retrieval, dynamic evaluation, the base model (hullft/methods/)."""
import types

import lm_eval.utils
import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from hullft.compose import compose_config
from hullft.engine.finetune import FinetuneEngine
from hullft.errors import ConfigError
from hullft.methods import Method, MethodRun
from hullft.methods.dynamic_eval import DynamicEval
from hullft.methods.incontext import InContext
from hullft.models import load_model
from hullft.runner import run_job
from hullft.scoring.bpb import prefix_token_id, query_windows, score_text
from hullft.selection.multiset import Multiset

METHODS = ["finetune", "incontext", "finetune+incontext", "dynamic_eval", "none", "merge"]
SAME = ["query_id", "method", "selector", "n", "opt_steps", "fwd_bwd", "context_tokens", "query_tokens"]


@pytest.fixture(scope="module")
def tiny():
    return load_model(compose_config(["model=tiny"]).model)


class StubRun:
    """The parts of a QueryRun a method reads (the MethodRun protocol): the model, the query, the config, the
    pool's tokens and the retrieved rows."""

    def __init__(self, loaded, text, cfg, pool, rows):
        self.loaded, self.cfg, self.engine = loaded, cfg, None
        self.query = types.SimpleNamespace(text=text, doc_id="q", domain="d")
        self.space = types.SimpleNamespace(pool=types.SimpleNamespace(tokens=lambda row: list(pool[row])))
        self.rows = np.asarray(rows, dtype=np.int64)

    def score(self, context=()):
        return score_text(self.loaded, self.query.text, self.cfg.eval, None, context)

    def query_embedding(self):
        raise AssertionError("these methods do not embed the query")


def run_for(loaded, text, eval_overrides=(), pool=(), rows=()) -> MethodRun:
    run = StubRun(loaded, text, compose_config(["model=tiny", *eval_overrides]), pool, rows)
    assert isinstance(run, MethodRun)
    return run


@torch.no_grad()
def independent_nll(loaded, context, tokens, length, prefix):
    """lm-eval's rolling windows (its own functions); each window's input is the context, a separator, then the
    window's inputs, run through one plain forward; the sum of the query tokens' log-probabilities."""
    loaded.model.eval()
    total = 0.0
    windows = map(lm_eval.utils.make_disjoint_window,
                  lm_eval.utils.get_rolling_token_windows(tokens, prefix, length, 1))
    for i, (window_context, targets) in enumerate(windows):
        inputs = (window_context + targets)[-(length + 1):][:-1]
        if i == 0:  # [prefix] + the first tokens: the context's separator is that prefix
            inputs = inputs[1:]
        full = context + inputs
        logp = torch.log_softmax(loaded.model(input_ids=torch.tensor([full])).logits[0].double(), -1)
        start = len(full) - len(targets)
        total -= sum(logp[start + j, t].item() for j, t in enumerate(targets))  # position p predicts p + 1
    loaded.model.train()  # as load_model leaves it: the engine trains in that mode
    return total


@pytest.mark.parametrize("window", [1024, 40])  # the query in one window, and in three rolling windows
def test_incontext_equals_an_independent_computation(tiny, window):
    text = "The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. " * 1
    tokens = tiny.tokenizer(text, add_special_tokens=False).input_ids
    assert (window > len(tokens)) == (window == 1024) and len(tokens) // 40 == 2
    rng = np.random.default_rng(0)
    pool = [list(rng.integers(5, 250, size=n)) for n in (30, 50, 20)]
    run = run_for(tiny, text, [f"eval.window={window}"], pool, rows=[0, 1, 2])
    sep = prefix_token_id(tiny.tokenizer, run.cfg.eval.prefix_token)
    picked = Multiset.from_picks([2, 0, 1])  # relevance: row 2, then 0, then 1
    evaluation = InContext(context_tokens=90).score(run, picked)
    # row 2 (21 with its separator) and row 0 (31) whole, row 1 cut to its first 37 tokens; most relevant last
    context = pool[1][:37] + [sep] + pool[0] + [sep] + pool[2] + [sep]
    assert evaluation.context_tokens == len(context) == 90
    expected = independent_nll(tiny, context, tokens, min(window, tiny.context_length), sep)
    assert evaluation.score.nll_nats == pytest.approx(expected, rel=1e-6)
    assert evaluation.score.tokens == len(tokens)  # only the query's tokens are scored ...
    assert evaluation.score.bytes == len(text.encode())  # ... over the query's bytes
    empty = InContext(context_tokens=0).score(run, picked)
    assert empty.context_tokens == 0
    assert empty.score.nll_nats == pytest.approx(score_text(tiny, text, run.cfg.eval).nll_nats, rel=1e-6)


def test_hullfts_selection_is_read_by_weight(tiny):
    pool = [[10] * 5, [11] * 5, [12] * 5]
    run = run_for(tiny, "abc", pool=pool, rows=[0, 1, 2])
    sep = prefix_token_id(tiny.tokenizer, run.cfg.eval.prefix_token)
    hull = Multiset([0, 1, 2], [1, 3, 2])  # no pick order: multiplicity is the weight
    assert InContext(100).context(run, hull) == [10] * 5 + [sep] + [12] * 5 + [sep] + [11] * 5 + [sep]


def dynamic(tiny, text, lr, steps, segment, window=1024):
    run = run_for(tiny, text, [f"eval.window={window}", f"engine.lr={lr}", "data.max_length=64"])
    engine_cfg = OmegaConf.to_object(run.cfg.engine)
    engine_cfg.lr = lr  # lr=0 is refused by the start-up checks; here it proves nothing leaks
    run.engine = FinetuneEngine(tiny, engine_cfg)
    method = DynamicEval(steps=steps, segment=segment)
    try:
        return method.score(run, None), list(method.segment_nll)
    finally:
        run.engine.reset()


def _scored_per_window(tiny, text, window):
    cfg = compose_config(["model=tiny", f"eval.window={window}"]).eval
    return [w.targets for w in query_windows(tiny, text, cfg)[1]]


@pytest.mark.parametrize("segment, window", [(1024, 1024), (16, 1024), (16, 40)])
def test_dynamic_eval_with_lr_zero_is_the_base_score(tiny, segment, window):
    text = "Dynamic evaluation scores a segment first and learns from it afterwards. " * 3
    evaluation, _ = dynamic(tiny, text, lr=0.0, steps=2, segment=segment, window=window)
    base = score_text(tiny, text, run_for(tiny, text, [f"eval.window={window}"]).cfg.eval)
    segments = sum(-(-len(w) // segment) for w in _scored_per_window(tiny, text, window))
    if segments == 1:  # nothing is scored after the only segment: no step is taken
        assert evaluation.training is None
    else:
        assert evaluation.training.opt_steps == 2 * (segments - 1)
    if segment >= window:  # one forward per window, as the static scorer: bit for bit
        assert evaluation.score.nll_nats == base.nll_nats
    else:  # the same logits from shorter forwards: equal to float rounding
        assert evaluation.score.nll_nats == pytest.approx(base.nll_nats, rel=1e-6)
    assert evaluation.score.tokens == base.tokens and evaluation.score.bytes == base.bytes


def test_dynamic_eval_never_scores_a_token_it_has_trained_on(tiny):
    """A block of random letters, twice. Oracle, segment by segment: reset the model, replay the training on the
    query tokens before the segment only, then score the segment with a plain forward. Had a segment been
    trained on before it was scored, its NLL would be lower than the oracle's."""
    rng = np.random.default_rng(1)
    text = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=96)) * 2
    segment, steps, train_length = 32, 4, 64
    _, base = dynamic(tiny, text, lr=1e-2, steps=0, segment=segment)
    evaluation, adapted = dynamic(tiny, text, lr=1e-2, steps=steps, segment=segment)
    tokens = tiny.tokenizer(text, add_special_tokens=False).input_ids
    sep = prefix_token_id(tiny.tokenizer, compose_config(["model=tiny"]).eval.prefix_token)
    engine = FinetuneEngine(tiny, OmegaConf.to_object(compose_config(["model=tiny", "engine.lr=1e-2"]).engine))
    assert len(tokens) == 192 and len(adapted) == len(base) == 6
    assert evaluation.training.opt_steps == steps * (len(adapted) - 1)  # none after the last segment
    for k in range(len(adapted)):
        engine.reset()
        for done in range(segment, segment * k + 1, segment):
            engine.finetune([tokens[max(0, done - train_length):done]], [steps])
        tiny.model.eval()
        with torch.no_grad():
            logp = torch.log_softmax(tiny.model(input_ids=torch.tensor([[sep] + tokens])).logits[0].float(), -1)
        tiny.model.train()
        oracle = -sum(logp[i, tokens[i]].item() for i in range(segment * k, segment * (k + 1)))
        assert adapted[k] == pytest.approx(oracle, rel=1e-5), k
    engine.reset()
    half = len(base) // 2  # and training did something: the second copy, seen before, gains more
    assert sum(base[:half]) - sum(adapted[:half]) < sum(base[half:]) - sum(adapted[half:])
    assert evaluation.score.nll_nats == pytest.approx(sum(adapted))


@pytest.mark.parametrize("method", METHODS)
def test_no_state_crosses_queries(tmp_path, tiny_overrides, monkeypatch, method):
    import hullft.runner

    reads = "incontext" in method  # two sequences of up to 96 tokens (and separators) in 200
    args = [*tiny_overrides, "queries_per_domain=1", "selector=nn", "budget=2" if reads else "budget=3",
            "engine.lr=3e-3", f"method={method}", "method.segment=64" if method == "dynamic_eval" else "",
            "method.context_tokens=200" if reads else "",
            *(["method.experts.clusters=3", "method.experts.steps=4", "method.beta=0.5"] if method == "merge" else [])]
    cfg = compose_config([a for a in args if a])
    forward = run_job(cfg, tmp_path / "forward")
    pick = hullft.runner.pick_queries
    monkeypatch.setattr(hullft.runner, "pick_queries", lambda *a, **k: pick(*a, **k).iloc[::-1])
    backward = run_job(cfg, tmp_path / "backward")
    assert forward.query_id.tolist() == backward.query_id.tolist()[::-1]
    a, b = (df.sort_values("query_id").reset_index(drop=True) for df in (forward, backward))
    np.testing.assert_allclose(a.bpb, b.bpb, rtol=1e-9)
    pd.testing.assert_frame_equal(a[SAME], b[SAME], check_dtype=False)
    assert (a.method == method).all()
    if method in ("dynamic_eval", "none"):
        assert (a.selector == "none").all() and (a.n == 0).all() and (a.t_retrieve == 0).all()
    if method == "none":
        np.testing.assert_allclose(a.bpb, a.bpb_base, rtol=1e-12)
    if method == "merge":  # every query merged some experts, and merging moved its score
        assert (a.experts_merged >= 1).all() and (a.bpb != a.bpb_base).all() and (a.t_offline > 0).all()


@pytest.mark.parametrize("overrides, line", [
    (["method=incontext", "method.context_tokens=2048"],
     "eval.window=256 + method.context_tokens=2048 > the model's context of 512 tokens"),
    (["method=incontext", "method.context_tokens=200", "budget=3"],
     "budget=3: 3 sequences of up to data.max_length=96 tokens and their separators need 291 tokens, "
     "method.context_tokens=200 holds 2: lower budget to 2 or raise method.context_tokens to 291"),
    (["method=finetune+incontext", "method.context_tokens=200", "budget=3"], "method.context_tokens=200 holds 2"),
    (["method=dynamic_eval", "checkpoints=[1]"], "checkpoints=[1]: method=dynamic_eval selects nothing"),
    (["method=none", "alpha=0.5"], "alpha=0.5: method=none selects nothing"),
    (["method=dynamic_eval", "method.segment=0"], "method.segment=0: must be a positive number of tokens"),
])
def test_a_method_setting_that_cannot_run_is_refused_in_one_line(tmp_path, tiny_overrides, overrides, line):
    with pytest.raises(Exception) as refused:
        run_job(compose_config([*tiny_overrides, "budget=2", *overrides]), tmp_path / "out")
    assert line in str(refused.value) and not (tmp_path / "out").exists()
    if "context_tokens" in line or "selects nothing" in line:
        assert isinstance(refused.value, ConfigError)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_option_is_a_method(method):
    from hydra.utils import instantiate

    assert isinstance(instantiate(compose_config([f"method={method}"]).method), Method)


def test_merge_with_no_expert_above_tau_is_the_base_model_and_says_so(tmp_path, tiny_overrides):
    cfg = compose_config([*tiny_overrides, "queries_per_domain=1", "method=merge", "method.experts.clusters=3",
                          "method.experts.steps=4", "method.beta=10", "method.tau=0.5", "checkpoints=[]"])
    records = run_job(cfg, tmp_path / "out")
    assert (records.experts_merged == 0).all() and (records.experts_weight == 0).all()
    assert records.merge_path.isin(["fused", "torch"]).all() and records.merge_path.nunique() == 1
    np.testing.assert_allclose(records.bpb, records.bpb_base, rtol=1e-12)
