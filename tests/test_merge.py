"""method=merge (TTMM) and its experts (hullft/experts/): ttmerge's own model as the oracle of the merged weights,
PEFT's merge as the oracle on GPT-2's transposed weights, a bit-exact restore, and the experts stage built over
shards and resumed."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from transformers import LlamaConfig, LlamaForCausalLM

from hullft.compose import compose_config
from hullft.config import DType
from hullft.data import load_data_space
from hullft.embedder import Embedder
from hullft.engine.finetune import FinetuneEngine
from hullft.experts import stage
from hullft.experts import merging
from hullft.experts.fused_merge import fused_merge
from hullft.experts.merging import MergedAdapters, _add_in_blocks, expert_mixture, scoring_dtype
from hullft.experts.settings import ExpertSettings
from hullft.experts.stage import Experts, experts_dir, read_expert
from hullft.experts.train import expert_engine, train_expert
from hullft.methods import MethodRun
from hullft.methods.merge import Merge
from hullft.models import LoadedModel, load_model
from hullft.scoring.bpb import score_text

REPO = Path(__file__).resolve().parent.parent
EXPERTS = 4
SETTINGS = ExpertSettings(clusters=EXPERTS, steps=6, rank=4, alpha=8, lr=1e-2)  # large enough deltas to see
MERGE = ["method=merge", "method.experts.clusters=3", "method.experts.steps=4", "checkpoints=[]"]


def tiny_llama() -> LoadedModel:
    """SmolLM2's architecture (Llama, grouped-query attention, tied embeddings), tiny."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=True)
    return LoadedModel(model=LlamaForCausalLM(config).train(), tokenizer=None, name="tiny-llama",
                       device=torch.device("cpu"), dtype=DType.fp32, context_length=128, fingerprint="tiny-llama")


def train_experts(make_model, directory: Path) -> None:
    """EXPERTS experts in PEFT's layout, each trained by the harness on its own random sequences."""
    engine = expert_engine(make_model(), compose_config(["model=tiny"]).engine, SETTINGS)
    g = torch.Generator().manual_seed(1)
    for i in range(EXPERTS):
        sequences = [torch.randint(3, 300, (24,), generator=g).tolist() for _ in range(SETTINGS.steps)]
        train_expert(engine, sequences, 64, directory / str(i))


def centroids_and_query():
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(EXPERTS, 16)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    query = centroids[0] + centroids[1] + 0.1 * rng.normal(size=16).astype(np.float32)
    return centroids, (query / np.linalg.norm(query)).astype(np.float32)


class _Text:
    def decode(self, ids, skip_special_tokens=True):
        return "a query"


class _Encoder:
    def __init__(self, query):
        self.query = torch.as_tensor(query)

    def encode(self, text, convert_to_tensor=True, show_progress_bar=False):
        return self.query.clone()


# (beta, tau, max_experts): two experts near the query; every expert above tau, capped at 2; none above tau
CASES = {"nearest": (0.2, 0.01, 50), "capped": (5.0, 0.0, 2), "none above tau": (5.0, 0.5, 50)}


@pytest.mark.parametrize("case", CASES)
def test_merged_weights_equal_ttmerges(tmp_path, case):
    ttmerge = pytest.importorskip("ttmerge")
    beta, tau, max_experts = CASES[case]
    train_experts(tiny_llama, tmp_path / "experts")
    centroids, query = centroids_and_query()
    ours, theirs = tiny_llama().model, tiny_llama().model
    base = {n: p.detach().clone() for n, p in ours.named_parameters()}

    loaded = [read_expert(tmp_path / "experts", i) for i in range(EXPERTS)]
    chosen, weights, _ = expert_mixture(query, centroids, beta, tau, max_experts)
    MergedAdapters(ours, [a for a, _, _ in loaded], [s for _, s, _ in loaded]).add(chosen, weights)
    in_place = tiny_llama().model  # where captured graphs read the weights' storage
    MergedAdapters(in_place, [a for a, _, _ in loaded], [s for _, s, _ in loaded]).add(chosen, weights, True)
    assert all(torch.equal(p, q) for p, q in zip(ours.parameters(), in_place.parameters()))
    oracle = ttmerge.TestTimeMergingModel(torch.as_tensor(centroids), _Text(), _Encoder(query), theirs,
                                          str(tmp_path / "experts"), beta=beta, tau=tau, device="cpu",
                                          max_merge_count=max_experts)
    oracle._load_merged_model(torch.tensor([[5, 6, 7]]))

    expected_count = {"nearest": None, "capped": 2, "none above tau": 0}[case]
    assert len(chosen) == expected_count if expected_count is not None else len(chosen) >= 2
    theirs_params = dict(theirs.named_parameters())
    moved = 0.0
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p, theirs_params[name], atol=1e-6, rtol=0, msg=name)
        moved = max(moved, float((p - base[name]).abs().max()))
    assert moved == 0.0 if not chosen else moved > 1e-4  # the merge did something the comparison could miss


def test_gpt2s_transposed_weights_equal_peft_merging_one_expert(tmp_path):
    """GPT-2 keeps its weights as (in, out) Conv1D: one expert at weight 1 equals PEFT's own merge_and_unload."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    make = lambda: load_model(compose_config(["model=tiny", "model.dtype=fp32"]).model)  # noqa: E731
    train_experts(make, tmp_path / "experts")
    adapter, scaling, _ = read_expert(tmp_path / "experts", 2)
    ours = make().model
    MergedAdapters(ours, [read_expert(tmp_path / "experts", i)[0] for i in range(EXPERTS)],
                   [scaling] * EXPERTS).add([2], [1.0])
    peft_model = get_peft_model(make().model, LoraConfig(r=SETTINGS.rank, lora_alpha=SETTINGS.alpha,
                                                         target_modules="all-linear", lora_dropout=0.0))
    set_peft_model_state_dict(peft_model, adapter)
    merged = dict(peft_model.merge_and_unload().named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p, merged[name], atol=1e-6, rtol=1e-6, msg=name)


needs_fused = pytest.mark.skipif(fused_merge() is None, reason="the fused merge needs AVX2 and FMA, and a compiler")


@pytest.mark.parametrize("fused", [pytest.param(True, marks=needs_fused), False])
def test_bf16_scores_with_the_merge_beside_equal_the_merge_in_place(tmp_path, monkeypatch, fused):
    """Under bf16 autocast the merge is written beside the weights as bf16 (fused, or a few rows at a time): the
    same scores as the fp32 merge in place, which autocast casts to bf16 at every forward."""
    monkeypatch.setattr(merging, "CHUNK", 1000)  # several blocks per weight
    make = lambda: load_model(compose_config(["model=tiny", "model.dtype=bf16"]).model)  # noqa: E731
    train_experts(make, tmp_path / "experts")
    centroids, query = centroids_and_query()
    read = [read_expert(tmp_path / "experts", i) for i in range(EXPERTS)]
    chosen, weights, _ = expert_mixture(query, centroids, 0.2, 0.01, 50)
    text, eval_cfg = "The licence grants you the right to copy. " * 8, compose_config(["model=tiny"]).eval
    scores = {}
    for in_place in (False, True):
        loaded = make()
        assert loaded.dtype == DType.bf16
        adapters = MergedAdapters(loaded.model, [a for a, _, _ in read], [s for _, s, _ in read],
                                  scoring_dtype(loaded), fused)
        assert (adapters.fused is not None) == fused
        adapters.add(chosen, weights, in_place)
        assert {p.dtype for p in adapters.weights} == {torch.float32 if in_place else torch.bfloat16}
        scores[in_place] = score_text(loaded, text, eval_cfg).nll_nats
    assert scores[False] == scores[True] != score_text(make(), text, eval_cfg).nll_nats


@needs_fused
@pytest.mark.parametrize("k", [1, 8, 24])
@pytest.mark.parametrize("shape", [(23, 149), (21, 144), (8, 64)])  # partial tiles of rows and columns; whole ones
def test_fused_merge_is_the_sum_torch_computes(shape, k):
    """weight + left @ right: in fp32 within float rounding of the exact sum and of torch's addmm (1e-6), in place
    the same as beside, as bf16 the fp32 sum rounded as torch rounds it, and all but equal to torch's path."""
    g = torch.Generator().manual_seed(k)
    weight = torch.randn(shape, generator=g)
    left, right = torch.randn(shape[0], k, generator=g) * 0.1, torch.randn(k, shape[1], generator=g) * 0.1
    beside, halves = torch.empty_like(weight), torch.empty_like(weight, dtype=torch.bfloat16)
    fused_merge().merge_into(weight, left, right, beside)
    fused_merge().merge_into(weight, left, right, halves)
    torch.testing.assert_close(beside, torch.addmm(weight, left, right), atol=1e-6, rtol=1e-6)
    exact = weight.double() + left.double() @ right.double()
    assert float((beside.double() - exact).abs().max()) <= 32 * k * torch.finfo(torch.float32).eps
    assert torch.equal(halves.view(torch.int16), beside.bfloat16().view(torch.int16))
    in_place = weight.clone()
    fused_merge().merge_into(in_place, left, right, in_place)
    assert torch.equal(in_place, beside)
    unaligned = torch.empty(weight.numel() + 1)[1:].view(shape)  # plain stores where streaming ones cannot go
    fused_merge().merge_into(weight, left, right, unaligned)
    assert torch.equal(unaligned, beside)
    ours = torch.empty_like(weight, dtype=torch.bfloat16)
    _add_in_blocks(weight, left, right, ours, torch.empty(weight.numel()))
    # equal on the CPUs measured (the same order of sums as MKL's); a BLAS summing otherwise may differ in a few
    assert (ours.view(torch.int16) != halves.view(torch.int16)).float().mean() < 1e-3


@needs_fused
def test_fused_merge_over_threads_equals_one_thread():
    """Rows split over torch's threads (chunk edges, a last partial tile of rows and columns) give the same bits."""
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(1031, 200, generator=g)  # ~3 threads' grains of rows
    left, right = torch.randn(1031, 16, generator=g) * 0.1, torch.randn(16, 200, generator=g) * 0.1
    before, outs = torch.get_num_threads(), []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            outs.append(torch.empty_like(weight, dtype=torch.bfloat16))
            fused_merge().merge_into(weight, left, right, outs[-1])
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(out.view(torch.int16), outs[0].view(torch.int16)) for out in outs[1:])
    torch_path = torch.addmm(weight, left, right).bfloat16()
    assert (outs[0].view(torch.int16) != torch_path.view(torch.int16)).float().mean() < 1e-3


@needs_fused
def test_fused_merge_rounds_to_bf16_as_torch_does():
    """Ties to even, NaN, infinities, signed zeros, subnormals: with a zero delta the bf16 output is torch's cast of
    the fp32 sum (so -0 + 0 is +0)."""
    bits = torch.tensor([0x3F808000, 0x3F818000, 0x3F80FFFF, 0x7F800000, 0xFF800000, 0x7FC00001, 0xFFFFFFFF,
                         0x80000000, 0x00000001, 0x007FFFFF, 0x7F7FFFFF, 0x3F800000], dtype=torch.int64)
    weight = bits.to(torch.int32).view(torch.float32).repeat(16, 16)[:, :160].contiguous()  # 16 x 160
    out = torch.empty_like(weight, dtype=torch.bfloat16)
    fused_merge().merge_into(weight, torch.zeros(16, 2), torch.zeros(2, 160), out)
    assert torch.equal(out.view(torch.int16), (weight + 0.0).bfloat16().view(torch.int16))


class StubRun:
    """A MethodRun over a fixed text and query embedding."""

    def __init__(self, loaded, text, embedding, engine=None):
        self.loaded, self.cfg, self.text, self.embedding = loaded, compose_config(["model=tiny"]), text, embedding
        self.query, self.space, self.rows, self.engine = None, None, np.zeros(0, dtype=np.int64), engine

    def score(self, context=()):
        return score_text(self.loaded, self.text, self.cfg.eval, None, context)

    def query_embedding(self):
        return self.embedding


@pytest.mark.parametrize("captured", [False, True])
def test_restore_is_bit_exact_and_queries_are_order_free(tmp_path, monkeypatch, captured):
    """Written beside the weights, the merge is undone as the query is scored; in place (captured scoring),
    the engine's reset undoes it."""
    make = lambda: load_model(compose_config(["model=tiny", "model.dtype=fp32"]).model)  # noqa: E731
    train_experts(make, tmp_path / "experts")
    loaded = make()
    engine = FinetuneEngine(loaded, compose_config(["model=tiny"]).engine)
    monkeypatch.setattr(FinetuneEngine, "captured", property(lambda self: captured))
    before = {n: t.detach().clone() for n, t in loaded.model.state_dict().items()}
    method = Merge(beta=0.5, tau=0.01)
    centroids, _ = centroids_and_query()
    read = [read_expert(tmp_path / "experts", i) for i in range(EXPERTS)]
    method.experts = Experts(tmp_path / "experts", centroids, [a for a, _, _ in read], [s for _, s, _ in read],
                             {"seconds": 1.0, "cpu_seconds": 1.0, "flops": 1.0})
    method.adapters = MergedAdapters(loaded.model, method.experts.adapters, method.experts.scalings)
    runs = [StubRun(loaded, "def f(x):\n    return x + 1\n" * 4, centroids[0], engine),
            StubRun(loaded, "The licence grants you the right to copy. " * 4, centroids[3], engine)]
    assert all(isinstance(r, MethodRun) for r in runs)
    unchanged = lambda: all(torch.equal(t, before[n]) for n, t in loaded.model.state_dict().items())  # noqa: E731

    def in_order(order):
        out = {}
        for i in order:
            evaluation = method.score(runs[i], None)
            assert unchanged() != captured and engine.dirty == captured
            engine.reset()
            assert unchanged()
            out[i] = (evaluation.score.nll_nats, evaluation.experts_merged, evaluation.experts_weight)
        return out

    forward, backward = in_order([0, 1]), in_order([1, 0])
    assert forward == backward and all(merged >= 1 for _, merged, _ in forward.values())
    base = runs[0].score().nll_nats
    assert forward[0][0] != base  # merging changed the score, and the restore undid it (asserted above)


def _cli(args, cache: Path):
    env = {**os.environ, "HULLFT_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "hullft.data", "experts", *args], capture_output=True, text=True,
                          env=env, cwd=cache.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


EXPERT_FILES = ("centroids.npy", "clusters.npy", "*/adapter_model.safetensors", "*/adapter_config.json")


@pytest.fixture(scope="module")
def one_process_experts(tiny_overrides, tmp_path_factory):
    cache = tmp_path_factory.mktemp("experts") / "cache"
    out = _cli([*tiny_overrides, *MERGE], cache).stdout
    assert "experts: 3 trained" in out
    (built,) = (cache / "dataspace").glob("experts-*")
    return cache, built


def test_experts_over_two_shards_equal_one_process(one_process_experts, tiny_overrides):
    cache, built = one_process_experts
    one = built.with_name("one-process")
    shutil.copytree(built, one)
    shutil.rmtree(built)
    out = _cli(["-m", *tiny_overrides, *MERGE, "data.num_shards=2", "data.shard=range(0,2)",
                "hydra/launcher=submitit_local"], cache).stdout
    assert list((cache / "jobs").rglob("*_log.out"))  # real submitit jobs ran the shards
    for pattern in EXPERT_FILES:
        ours, theirs = sorted(one.glob(pattern)), sorted(built.glob(pattern))
        assert [p.relative_to(one) for p in ours] == [p.relative_to(built) for p in theirs] and ours, (pattern, out)
        assert all(a.read_bytes() == b.read_bytes() for a, b in zip(ours, theirs)), pattern
    shutil.rmtree(one)


def test_a_stopped_stage_resumes_without_redoing_finished_experts(one_process_experts, tiny_overrides,
                                                                   monkeypatch):
    cache, _ = one_process_experts
    monkeypatch.setenv("HULLFT_CACHE", str(cache))
    cfg = compose_config([*tiny_overrides, *MERGE, "method.experts.seed=1"])  # new experts, the same space
    loaded = load_model(cfg.model)
    space = load_data_space(cfg.data, loaded.tokenizer, loaded.fingerprint, Embedder(cfg.embedder))
    trained, real = [], stage.train_expert

    def killed_after_one(engine, sequences, max_length, path):
        if trained:
            raise KeyboardInterrupt  # the process stops while training its second expert
        trained.append(path.name)
        return real(engine, sequences, max_length, path)

    monkeypatch.setattr(stage, "train_expert", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        stage.build_experts(cfg, space, loaded.fingerprint)
    directory = experts_dir(cfg, space, loaded.fingerprint)
    first = directory / trained[0] / "adapter_model.safetensors"
    kept = (first.stat().st_ino, first.read_bytes())

    again = []
    monkeypatch.setattr(stage, "train_expert", lambda e, s, m, path: again.append(path.name) or real(e, s, m, path))
    experts = stage.load_experts(cfg, space, loaded.fingerprint)
    assert trained == ["0"] and again == ["1", "2"]
    assert (first.stat().st_ino, first.read_bytes()) == kept
    assert len(experts.adapters) == 3 and experts.cost["flops"] > 0 and experts.cost["seconds"] > 0


def test_a_job_without_experts_refuses_the_stage_in_one_line(tiny_overrides, tmp_path):
    env = {**os.environ, "HULLFT_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "hullft.data", "experts", *tiny_overrides], capture_output=True,
                          text=True, env=env, cwd=tmp_path)
    assert proc.returncode != 0 and "the experts stage is method=merge's; add method=merge" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_expert_defaults_are_the_yaml_tree():
    merge = OmegaConf.load(REPO / "conf" / "method" / "merge.yaml")
    assert ExpertSettings(**merge.experts) == ExpertSettings()
    method = Merge()
    assert (method.beta, method.tau, method.max_experts) == (merge.beta, merge.tau, merge.max_experts)
