import math

import pytest
import torch

from hullft.compose import compose_config
from hullft.models import load_model
from hullft.scoring import score_text

TEXT = ("In the beginning God created the heaven and the earth. And the earth was without form, and void; "
        "and darkness was upon the face of the deep. Naïve café ✓ — unicode bytes count. ") * 3


@pytest.fixture(scope="module")
def tiny():
    return load_model(compose_config(["model=tiny"]).model)


@torch.no_grad()
def explicit_nll(loaded, tokens, window):
    """Token by token: each token conditioned on its window's context, as the protocol defines."""
    loaded.model.eval()
    total = 0.0
    for i, tok in enumerate(tokens):
        start = (i // window) * window
        context = [tokens[start - 1] if start > 0 else loaded.prefix_token_id] + tokens[start:i]
        logits = loaded.model(input_ids=torch.tensor([context])).logits[0, -1]
        total -= torch.log_softmax(logits.double(), -1)[tok].item()
    return total


@pytest.mark.parametrize("window", [64, 1024])
def test_rolling_bpb_equals_explicit_token_sum(tiny, window):
    cfg = compose_config(["eval=rolling", f"eval.window={window}"]).eval
    tokens = tiny.tokenizer(TEXT, add_special_tokens=False).input_ids
    assert len(tokens) > 64  # longer than the small window: several windows
    score = score_text(tiny, TEXT, cfg)
    expected = explicit_nll(tiny, tokens, min(window, tiny.context_length)) / math.log(2) / len(TEXT.encode())
    assert score.tokens == len(tokens)
    assert abs(score.bpb - expected) < 1e-6


def test_first_window_bpb_scores_only_the_first_window(tiny):
    cfg = compose_config(["eval=first_window", "eval.window=50"]).eval
    tokens = tiny.tokenizer(TEXT, add_special_tokens=False).input_ids[:50]
    scored_bytes = len(tiny.tokenizer.decode(tokens).encode())
    score = score_text(tiny, TEXT, cfg)
    expected = explicit_nll(tiny, tokens, 50) / math.log(2) / scored_bytes
    assert score.tokens == 50 and score.bytes == scored_bytes
    assert abs(score.bpb - expected) < 1e-6


def test_scoring_leaves_training_mode_as_it_was(tiny):
    tiny.model.train()
    score_text(tiny, "hello world", compose_config([]).eval)
    assert tiny.model.training
