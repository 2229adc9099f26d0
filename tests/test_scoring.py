import math
import random

import lm_eval.utils
import pytest
import torch

from hullft.compose import compose_config
from hullft.config import PrefixToken
from hullft.models import load_model
from hullft.scoring.bpb import prefix_token_id, rolling_windows, score_text

TEXT = ("In the beginning God created the heaven and the earth. And the earth was without form, and void; "
        "and darkness was upon the face of the deep. Naïve café ✓ — unicode bytes count. ") * 3


@pytest.fixture(scope="module")
def tiny():
    return load_model(compose_config(["model=tiny"]).model)


def lm_eval_windows(tokens, prefix, length):
    """The oracle: lm-evaluation-harness's own window functions, as HFLM.loglikelihood_rolling calls them,
    reduced to (model input, scored targets) the way HFLM builds its batch."""
    out = []
    for context, targets in map(lm_eval.utils.make_disjoint_window,
                                lm_eval.utils.get_rolling_token_windows(tokens, prefix, length, 1)):
        out.append(((context + targets)[-(length + 1):][:-1], targets))
    return out


def test_rolling_windows_equal_lm_evals_on_random_inputs():
    rng = random.Random(0)
    for _ in range(500):
        length = rng.randint(1, 40)
        tokens = [rng.randrange(1000) for _ in range(rng.randint(1, 5 * length + 3))]
        ours = [(w.inputs, w.targets) for w in rolling_windows(tokens, -1, length)]
        assert ours == lm_eval_windows(tokens, -1, length), (len(tokens), length)
        assert [t for _, ts in ours for t in ts] == tokens  # every token scored exactly once


def test_rolling_windows_match_the_reference_example():
    windows = [(w.inputs, w.targets) for w in rolling_windows(list(range(10)), -1, 4)]
    assert windows == [([-1, 0, 1, 2], [0, 1, 2, 3]), ([3, 4, 5, 6], [4, 5, 6, 7]), ([5, 6, 7, 8], [8, 9])]


@torch.no_grad()
def token_nll(loaded, context, token):
    logits = loaded.model(input_ids=torch.tensor([context])).logits[0, -1]
    return -torch.log_softmax(logits.double(), -1)[token].item()


def explicit_rolling_nll(loaded, tokens, length, prefix):
    """Token by token, from the definition: targets in blocks of `length`; a full block's tokens see the token
    before the block (the prefix for the first) and the block so far; the last, partial block's tokens see
    the `length` inputs that end just before the document's last token."""
    loaded.model.eval()
    total, n = 0.0, len(tokens)
    for i, tok in enumerate(tokens):
        block = i // length
        if block == 0:
            context = [prefix] + tokens[:i]
        elif (block + 1) * length <= n:
            context = tokens[block * length - 1:i]
        else:
            context = tokens[n - length - 1:i]
        total += token_nll(loaded, context, tok)
    return total


@pytest.mark.parametrize("n_tokens", [1, 8, 9, 28])
def test_rolling_bpb_equals_explicit_token_sum(tiny, n_tokens):
    length = 8  # the tiny model's tokenizer is one token per byte for ASCII
    text = "The quick brown fox jumps over the lazy dog"[:n_tokens]
    cfg = compose_config(["eval=rolling", f"eval.window={length}"]).eval
    tokens = tiny.tokenizer(text, add_special_tokens=False).input_ids
    assert len(tokens) == n_tokens
    score = score_text(tiny, text, cfg)
    prefix = prefix_token_id(tiny.tokenizer, PrefixToken.eot)
    expected = explicit_rolling_nll(tiny, tokens, length, prefix)
    assert score.tokens == n_tokens and score.bytes == len(text.encode())
    assert abs(score.nll_nats - expected) < 1e-6 * max(1.0, expected)
    assert abs(score.bpb - expected / math.log(2) / len(text.encode())) < 1e-6


def test_rolling_bpb_on_unicode_text_with_a_large_window(tiny):
    cfg = compose_config(["eval=rolling", "eval.window=1024"]).eval
    tokens = tiny.tokenizer(TEXT, add_special_tokens=False).input_ids
    length = min(1024, tiny.context_length)
    assert len(tokens) > length  # longer than the model's context: several windows
    score = score_text(tiny, TEXT, cfg)
    expected = explicit_rolling_nll(tiny, tokens, length, prefix_token_id(tiny.tokenizer, PrefixToken.eot))
    assert abs(score.bpb - expected / math.log(2) / len(TEXT.encode())) < 1e-6


def test_first_window_bpb_scores_only_the_first_window(tiny):
    cfg = compose_config(["eval=first_window", "eval.window=50"]).eval
    tokens = tiny.tokenizer(TEXT, add_special_tokens=False).input_ids[:50]
    scored_bytes = len(tiny.tokenizer.decode(tokens).encode())
    prefix = prefix_token_id(tiny.tokenizer, PrefixToken.eot)
    expected = sum(token_nll(tiny, [prefix] + tokens[:i], t) for i, t in enumerate(tokens))
    score = score_text(tiny, TEXT, cfg)
    assert score.tokens == 50 and score.bytes == scored_bytes
    assert abs(score.bpb - expected / math.log(2) / scored_bytes) < 1e-6


def test_first_window_as_the_hullft_reference_computes_it(tiny):
    """No prefix token (the first token is never scored), divided by the whole document's bytes."""
    cfg = compose_config(["eval=first_window", "eval.window=50", "eval.prefix=false", "eval.bytes=document"]).eval
    tokens = tiny.tokenizer(TEXT, add_special_tokens=False).input_ids[:50]
    expected = sum(token_nll(tiny, tokens[:i], tokens[i]) for i in range(1, 50))
    score = score_text(tiny, TEXT, cfg)
    assert score.tokens == 49 and score.bytes == len(TEXT.encode())
    assert abs(score.bpb - expected / math.log(2) / len(TEXT.encode())) < 1e-6


class FakeTokenizer:
    def __init__(self, vocab, bos, eos):
        self.vocab, self.bos_token_id, self.eos_token_id = vocab, bos, eos

    def get_vocab(self):
        return self.vocab


def test_prefix_token_choices():
    gpt2_like = FakeTokenizer({"<|endoftext|>": 50256}, 50256, 50256)
    smol_like = FakeTokenizer({"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}, 1, 2)
    no_bos = FakeTokenizer({}, None, 7)
    assert [prefix_token_id(gpt2_like, k) for k in PrefixToken] == [50256, 50256, 50256]
    assert [prefix_token_id(smol_like, k) for k in PrefixToken] == [0, 1, 2]
    assert [prefix_token_id(no_bos, k) for k in PrefixToken] == [7, 7, 7]


def test_the_prefix_token_changes_the_score(tiny):
    text = "prefix matters"
    eos = score_text(tiny, text, compose_config(["eval.prefix_token=eos"]).eval)
    assert score_text(tiny, text, compose_config(["eval.prefix_token=bos"]).eval).nll_nats == eos.nll_nats
    tokens = tiny.tokenizer(text, add_special_tokens=False).input_ids
    expected = explicit_rolling_nll(tiny, tokens, 1024, tiny.tokenizer.eos_token_id)
    assert abs(eos.nll_nats - expected) < 1e-6 * max(1.0, expected)  # relative: fp32 sums of ~80 nats


def test_scoring_leaves_training_mode_as_it_was(tiny):
    tiny.model.train()
    score_text(tiny, "hello world", compose_config([]).eval)
    assert tiny.model.training


@pytest.mark.parametrize("length", [16, 64, 512])
def test_rolling_equals_lm_eval_hflm(tiny, length):
    """The peer itself as the oracle: lm-eval's HFLM.loglikelihood_rolling on the same model and prefix token.
    add_bos_token=False makes HFLM encode without special tokens, as we do (else a tokenizer that appends
    EOS, like this one, scores one token more)."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    texts = [TEXT, "x", TEXT[:length], TEXT[:length + 1], TEXT[: int(3.5 * length)]]
    lm = HFLM(pretrained=tiny.model, tokenizer=tiny.tokenizer, max_length=length, batch_size=1, device="cpu",
              prefix_token_id=prefix_token_id(tiny.tokenizer, PrefixToken.bos), add_bos_token=False)
    requests = [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)]
    theirs = lm.loglikelihood_rolling(requests, disable_tqdm=True)
    cfg = compose_config([f"eval.window={length}", "eval.prefix_token=bos"]).eval
    for text, ll in zip(texts, theirs):
        ours = score_text(tiny, text, cfg).nll_nats
        assert abs(ours + ll) <= 1e-6 * abs(ll), (len(text), ours, -ll)
    tiny.model.train()
