import math

import pytest
import torch

from hullft.compose import compose_config
from hullft.config import StepOrder
from hullft.engine.finetune import FinetuneEngine, fresh_passes, step_plan
from hullft.engine.train_steps import sparse_gradient, tied_input_embedding
from hullft.models import load_model


@pytest.fixture()
def tiny():
    return load_model(compose_config(["model=tiny"]).model)


def engine_cfg(**overrides):
    return compose_config([f"engine.{k}={v}" for k, v in overrides.items()]).engine


def sequences(n=3, length=40):
    g = torch.Generator().manual_seed(0)
    return [torch.randint(3, 300, (length + 7 * i,), generator=g).tolist() for i in range(n)]


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def hand_loop(model, plan, seqs, reuse_groups=False, lr=5e-5, sparse=True):
    """The plain loop the engine must equal: Adam, one step per element, batch 1 (the tied embedding's gradient
    sparse, as the engine forms it, unless sparse=False)."""
    torch.manual_seed(0)
    opt = torch.optim.Adam([p for p in model.parameters()], lr=lr, eps=1e-8, fused=True)
    previous = None
    for k in plan:
        if not (reuse_groups and k == previous):
            for p in model.parameters():
                p.grad = None
            ids = torch.tensor([seqs[k]])
            with sparse_gradient(tied_input_embedding(model) if sparse else None):
                model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        previous = k


def test_r1_equals_hand_loop_bit_for_bit(tiny):
    seqs, counts = sequences(), [2, 1, 3]
    engine = FinetuneEngine(tiny, engine_cfg(refresh_interval=1))
    result = engine.finetune(seqs, counts)
    ours = weights(tiny.model)
    engine.reset()
    hand_loop(tiny.model, [0, 0, 1, 2, 2, 2], seqs)
    assert_same(ours, weights(tiny.model))
    assert result.fwd_bwd == 6 and result.opt_steps == 6


def test_dense_embedding_gradient_equals_the_plain_loop_and_sparse_differs_only_by_rounding(tiny):
    """The baseline step (dense gradient of the tied embedding) is the plain loop bit for bit. The sparse one (the
    default) changes, in one step, only the embedding's update and only in the order of the sums over repeated
    tokens; over several steps that rounding reaches every weight through the forward, within rounding."""
    seqs, counts = sequences(), [2, 1, 3]
    assert tied_input_embedding(tiny.model) is tiny.model.get_input_embeddings()
    engine = FinetuneEngine(tiny, engine_cfg(refresh_interval=1))
    assert engine.sparse_embedding_grad

    def run(sparse, plan_counts):
        engine.steps.sparse_embedding_grad = sparse
        engine.finetune(seqs, plan_counts)
        after = weights(tiny.model)
        engine.reset()
        return after

    one_sparse, one_dense = run(True, [1, 0, 0]), run(False, [1, 0, 0])
    embedding = "transformer.wte.weight"
    for k in one_dense:
        if k in (embedding, "lm_head.weight"):
            torch.testing.assert_close(one_sparse[k], one_dense[k], rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(one_sparse[k], one_dense[k]), k
    seen = []  # whether each forward asked the embedding for a sparse gradient
    hook = tiny.model.get_input_embeddings().register_forward_hook(lambda module, *_: seen.append(module.sparse))
    sparse = run(True, counts)
    assert seen == [True] * 6
    dense = run(False, counts)
    assert seen[6:] == [False] * 6
    hook.remove()
    for k in dense:
        torch.testing.assert_close(sparse[k], dense[k], rtol=1e-5, atol=1e-6)
    hand_loop(tiny.model, [0, 0, 1, 2, 2, 2], seqs, sparse=False)  # last: the engine does not see these steps
    assert_same(dense, weights(tiny.model))
    assert not tiny.model.get_input_embeddings().sparse  # restored after every step


def test_an_untied_or_frozen_embedding_keeps_its_dense_gradient(tiny):
    model = tiny.model
    model.get_input_embeddings().weight.requires_grad_(False)
    assert tied_input_embedding(model) is None
    model.get_input_embeddings().weight.requires_grad_(True)
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    assert tied_input_embedding(model) is None
    assert not FinetuneEngine(tiny, engine_cfg()).sparse_embedding_grad


def test_a_later_query_starts_from_a_fresh_optimizer(tiny):
    """The optimizer's state is kept between queries and zeroed in place: a query after another equals the hand
    loop's fresh Adam bit for bit."""
    seqs = sequences()
    engine = FinetuneEngine(tiny, engine_cfg(refresh_interval=1, lr=1e-2))
    engine.finetune(seqs[1:], [3, 2])
    engine.reset()
    engine.finetune(seqs, [2, 1, 3])
    ours = weights(tiny.model)
    engine.reset()
    hand_loop(tiny.model, [0, 0, 1, 2, 2, 2], seqs, lr=1e-2)
    assert_same(ours, weights(tiny.model))


def test_r_equals_j_is_one_gradient_j_steps(tiny):
    seqs, counts = sequences(2), [4, 3]
    engine = FinetuneEngine(tiny, engine_cfg(refresh_interval=4))
    result = engine.finetune(seqs, counts)
    ours = weights(tiny.model)
    engine.reset()
    hand_loop(tiny.model, [0, 0, 0, 0, 1, 1, 1], seqs, reuse_groups=True)
    assert_same(ours, weights(tiny.model))
    assert result.fwd_bwd == 2 and result.opt_steps == 7


@pytest.mark.parametrize("counts,r", [([5, 1, 2], 2), ([7], 3), ([1, 1, 1], 2), ([4, 4], 1), ([6, 2, 9], 4)])
def test_fwd_bwd_counts_in_grouped_order(tiny, counts, r):
    engine = FinetuneEngine(tiny, engine_cfg(refresh_interval=r))
    result = engine.finetune(sequences(len(counts), 12), counts)
    assert result.fwd_bwd == sum(math.ceil(j / r) for j in counts)
    assert result.opt_steps == sum(counts)


def test_step_orders():
    assert step_plan([2, 1, 3], StepOrder.grouped) == [0, 0, 1, 2, 2, 2]
    assert step_plan([2, 1, 3], StepOrder.interleaved) == [0, 1, 2, 0, 2, 2]
    assert step_plan([2, 1], StepOrder.as_selected, picks=[1, 0, 0]) == [1, 0, 0]
    assert fresh_passes([0, 0, 0, 1, 2, 2], 2) == [True, False, True, True, True, False]
    assert fresh_passes([0, 1, 0, 1], 2) == [True] * 4  # interleaved steps never reuse


def test_reset_restores_everything_bit_exactly(tiny):
    before = weights(tiny.model)
    engine = FinetuneEngine(tiny, engine_cfg(lr=1e-2))
    engine.finetune(sequences(), [1, 2, 1])
    changed = weights(tiny.model)
    assert any(not torch.equal(before[k], changed[k]) for k in before)
    engine.reset()
    assert_same(before, weights(tiny.model))
    assert all(p.grad is None for p in tiny.model.parameters())


def test_divergence_stops_resets_and_leaves_next_query_unaffected(tiny):
    seqs = sequences()
    engine = FinetuneEngine(tiny, engine_cfg(refresh_interval=1))
    engine.finetune(seqs[2:], [3])
    expected = weights(tiny.model)
    engine.reset()

    # a numerical blow-up on the second step of a query
    calls = {"n": 0}

    def blow_up(module, args, output):
        calls["n"] += 1
        return output * float("nan") if calls["n"] == 2 else output

    hook = tiny.model.lm_head.register_forward_hook(blow_up)
    result = engine.finetune(seqs, [2, 2])
    hook.remove()
    assert result.diverged and result.opt_steps == 1 and result.fwd_bwd == 2
    assert all(torch.isfinite(p).all() for p in tiny.model.parameters())  # the NaN step was never applied
    engine.reset()
    engine.finetune(seqs[2:], [3])
    assert_same(expected, weights(tiny.model))


def test_micro_batches_take_one_step_per_batch(tiny):
    engine = FinetuneEngine(tiny, engine_cfg(batch_size=2))
    result = engine.finetune(sequences(), [2, 1, 2])
    assert result.opt_steps == 3 and result.fwd_bwd == 3


def test_truncates_to_max_length_without_padding(tiny):
    engine = FinetuneEngine(tiny, engine_cfg())
    seen = []
    hook = tiny.model.transformer.wte.register_forward_hook(lambda m, a, o: seen.append(a[0].shape[1]))
    engine.finetune([list(range(3, 200)), list(range(3, 20))], [1, 1], max_length=64)
    hook.remove()
    assert seen == [64, 17]


def test_lora_trains_only_adapters_and_reset_restores_them():
    pytest.importorskip("peft")
    loaded = load_model(compose_config(["model=tiny"]).model)
    base = weights(loaded.model)
    engine = FinetuneEngine(loaded, engine_cfg(lora="true", lr=1e-2))
    adapters = {k: v for k, v in weights(loaded.model).items() if "lora_" in k}
    assert adapters and all(p.requires_grad == ("lora_" in n) for n, p in loaded.model.named_parameters())
    engine.finetune(sequences(2), [2, 1])
    after = weights(loaded.model)
    assert any(not torch.equal(after[k], adapters[k]) for k in adapters)
    frozen = {k.replace("base_model.model.", "").replace(".base_layer", ""): v for k, v in after.items()
              if "lora_" not in k}
    assert all(torch.equal(frozen[k], base[k]) for k in base)
    engine.reset()
    assert all(torch.equal(weights(loaded.model)[k], adapters[k]) for k in adapters)
