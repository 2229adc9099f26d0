import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

from hullft import fused_encoder
from hullft.compose import compose_config
from hullft.embedder import Embedder

needs_onednn = pytest.mark.skipif(not fused_encoder.available(), reason="oneDNN bf16 is not available here")


def tiny_bert(hidden_act="gelu", dtype=torch.bfloat16, seed=0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=256, hidden_act=hidden_act, max_position_embeddings=64)
    return BertModel(config).eval().to(dtype)


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 500, (3, 40), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 25:] = 0  # padded rows, as the embedder's batches have
    return {"input_ids": ids, "attention_mask": mask}


@needs_onednn
@torch.no_grad()
def test_fused_layers_equal_the_stock_ones_within_bf16_rounding():
    stock, fused, exact = tiny_bert(), tiny_bert(), tiny_bert(dtype=torch.float32)
    assert fused_encoder.fuse_dense_layers(fused)
    assert isinstance(fused.encoder.layer[0].intermediate, fused_encoder.FusedDense)
    inputs = batch()
    valid = inputs["attention_mask"].bool()
    ours, theirs, truth = (m(**inputs).last_hidden_state.float()[valid] for m in (fused, stock, exact))
    # the same bf16 weights; stock rounds to bf16 after every op, fused once per dense layer
    assert (ours - truth).abs().max() <= (theirs - truth).abs().max() * 1.5
    cosine = torch.nn.functional.cosine_similarity(ours, truth, dim=-1)
    assert cosine.min() > 0.999


@needs_onednn
@torch.no_grad()
def test_a_fused_dense_without_a_post_op_is_bit_equal_to_linear():
    torch.manual_seed(0)
    dense = torch.nn.Linear(64, 96).to(torch.bfloat16)
    x = torch.randn(3, 40, 64, dtype=torch.bfloat16)
    assert torch.equal(fused_encoder.FusedDense(dense)(x), dense(x))
    exact = torch.nn.functional.gelu(torch.nn.functional.linear(x.float(), dense.weight.float(), dense.bias.float()))
    gelu = fused_encoder.FusedDense(dense, post="gelu")(x).float()
    assert (gelu - exact).abs().max() <= 2 * (torch.nn.functional.gelu(dense(x)).float() - exact).abs().max()


@pytest.mark.parametrize("model", [
    lambda: tiny_bert(dtype=torch.float32),  # fp32 weights
    lambda: tiny_bert(hidden_act="gelu_new"),  # the tanh approximation: not oneDNN's erf GELU
    lambda: tiny_bert().train(),
    lambda: tiny_bert().to("meta"),  # not on the CPU: oneDNN's op would fail there
    lambda: GPT2Model(GPT2Config(n_embd=64, n_layer=1, n_head=4)).eval().to(torch.bfloat16),  # not BERT-shaped
])
def test_models_it_cannot_fuse_are_left_untouched(model):
    m = model()
    before = [type(x) for x in m.modules()]
    assert not fused_encoder.fuse_dense_layers(m)
    assert [type(x) for x in m.modules()] == before


@needs_onednn
def test_the_fused_embedder_matches_fp32_as_closely_as_the_unfused_one():
    texts = [open(np.__file__).read()[:3000], "short", "a longer passage " * 60, "Naïve café — ✓ 日本語"]
    fp32, bf16, unfused = (Embedder(compose_config(o).embedder).embed(texts) for o in (
        ["embedder.precision=fp32"], ["embedder.precision=bf16"], ["embedder.precision=bf16", "embedder.fused=false"]))
    fused_cos, unfused_cos = (fp32 * bf16).sum(1), (fp32 * unfused).sum(1)
    assert fused_cos.min() > 0.999 and 1 - fused_cos.min() <= 2 * (1 - unfused_cos.min())
