"""Bits per byte of a text under the model.

BPB = -(sum of token log-likelihoods in nats) / ln 2 / (UTF-8 bytes of the scored text).

- rolling (lm-eval-harness loglikelihood_rolling): disjoint windows of `window` tokens; each window's
  input is the token before it (the prefix token for the first) plus all but its last target, so every
  token is scored exactly once; divided by the bytes of the whole document.
- first_window (the HullFT paper): only the first `window` tokens are scored, divided by the bytes of
  those tokens. (The paper divides by the bytes of the whole document, which understates BPB for
  documents longer than the window.)
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from hullft.config import DType, EvalConfig, Protocol
from hullft.models import LoadedModel


@dataclass
class Score:
    nll_nats: float
    tokens: int
    bytes: int
    seconds: float

    @property
    def bpb(self) -> float:
        return self.nll_nats / math.log(2) / self.bytes


@torch.no_grad()
def _window_nll(loaded: LoadedModel, inputs: list, targets: list) -> float:
    ids = torch.tensor([inputs], device=loaded.device)
    with torch.autocast(loaded.device.type, dtype=torch.bfloat16, enabled=loaded.dtype == DType.bf16):
        logits = loaded.model(input_ids=ids).logits[0]
    logp = torch.log_softmax(logits.float(), dim=-1)
    tgt = torch.tensor(targets, device=loaded.device)
    return -float(logp.gather(1, tgt[:, None]).sum(dtype=torch.float64))


def score_text(loaded: LoadedModel, text: str, cfg: EvalConfig) -> Score:
    start = time.perf_counter()
    tokens = loaded.tokenizer(text, add_special_tokens=False).input_ids
    if not tokens:
        raise ValueError("cannot score an empty text")
    window = min(cfg.window, loaded.context_length)
    if cfg.protocol == Protocol.first_window:
        tokens = tokens[:window]
        n_bytes = len(loaded.tokenizer.decode(tokens).encode("utf-8"))
    else:
        n_bytes = len(text.encode("utf-8"))
    was_training = loaded.model.training
    loaded.model.eval()
    nll = 0.0
    for s in range(0, len(tokens), window):
        targets = tokens[s:s + window]
        previous = tokens[s - 1] if s > 0 else loaded.prefix_token_id
        nll += _window_nll(loaded, [previous] + targets[:-1], targets)
    loaded.model.train(was_training)
    if loaded.device.type == "cuda":
        torch.cuda.synchronize(loaded.device)
    return Score(nll, len(tokens), n_bytes, time.perf_counter() - start)
