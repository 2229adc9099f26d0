"""Bits per byte of a text under the model.

BPB = -(sum of token log-likelihoods in nats) / ln 2 / (UTF-8 bytes).

- rolling: lm-evaluation-harness's loglikelihood_rolling, window for window (`get_rolling_token_windows`
  with context_len=1, then `make_disjoint_window`). The first window is the prefix token plus the first
  L-1 tokens and scores the first L; each later full window is the token before it plus all but its
  last target; the last, partial window is right-aligned: its input is the L tokens before its end, so
  its few scored tokens keep up to a full window of context. Every token is scored exactly once;
  divided by the bytes of the whole document.
- first_window (the HullFT paper): only the first `window` tokens. `eval.prefix=false` drops the
  prefix token (the first token is then never scored, as in the reference code) and `eval.bytes=document`
  divides by the whole document's bytes (the reference's choice) instead of those of the scored tokens.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from hullft import progress
from hullft.config import ByteCount, DType, EvalConfig, PrefixToken, Protocol
from hullft.models import LoadedModel


@dataclass
class Score:
    nll_nats: float
    tokens: int   # tokens scored
    bytes: int
    seconds: float
    forwarded: int = 0    # input positions run through the model (a context's included)
    token_pairs: int = 0  # sum over forwards of input length squared (attention's cost; see hullft/flops.py)

    @property
    def bpb(self) -> float:
        return self.nll_nats / math.log(2) / self.bytes


@dataclass
class Window:
    """One forward pass: the last len(targets) positions of `inputs` predict `targets`."""
    inputs: List[int]
    targets: List[int]


def prefix_token_id(tokenizer, kind: PrefixToken) -> int:
    """eot: <|endoftext|> where the vocabulary has it, else as bos. bos: lm-eval's rule (BOS, else EOS).
    eos: the tokenizer's EOS."""
    if kind == PrefixToken.eot:
        eot = tokenizer.get_vocab().get("<|endoftext|>")
        if eot is not None:
            return int(eot)
    if kind in (PrefixToken.eot, PrefixToken.bos) and tokenizer.bos_token_id is not None:
        return int(tokenizer.bos_token_id)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"eval.prefix_token={kind.value}: the tokenizer has no such token; choose another")
    return int(tokenizer.eos_token_id)


def rolling_windows(tokens: List[int], prefix: int, length: int) -> List[Window]:
    """lm-eval's disjoint rolling windows (context_len=1) over `tokens`, each at most `length` inputs long."""
    first = min(length, len(tokens))
    windows = [Window([prefix] + tokens[:first - 1], tokens[:first])]
    done = first
    while done < len(tokens):
        scored = min(len(tokens) - done, length)
        end = done + scored
        windows.append(Window(tokens[end - length - 1:end - 1], tokens[done:end]))
        done = end
    return windows


def with_context(windows: List[Window], context: Sequence[int], prefix: Optional[int]) -> List[Window]:
    """Each window with `context` before its inputs; the targets are unchanged. Where the first window starts
    with the prefix token and the context ends with it (a separator), that token is not repeated."""
    if not context:
        return windows
    context = list(context)
    first = windows[0].inputs
    if prefix is not None and first[:1] == [prefix] and context[-1] == prefix:
        first = first[1:]
    return [Window(context + first, windows[0].targets)] + [Window(context + w.inputs, w.targets) for w in windows[1:]]


def scoring_windows(tokens: List[int], prefix: int, cfg: EvalConfig, length: int) -> List[Window]:
    if cfg.protocol == Protocol.rolling:
        return rolling_windows(tokens, prefix, length)
    head = tokens[:length]
    if cfg.prefix:
        return [Window([prefix] + head[:-1], head)]
    return [Window(head[:-1], head[1:])] if len(head) > 1 else []


def eager_logits(loaded: LoadedModel) -> Callable[[List[int]], torch.Tensor]:
    """Logits (positions, vocab) of one unpadded sequence, by a plain forward pass."""
    def forward(inputs: List[int]) -> torch.Tensor:
        ids = torch.tensor([inputs], device=loaded.device)
        with torch.autocast(loaded.device.type, dtype=torch.bfloat16, enabled=loaded.dtype == DType.bf16):
            return loaded.model(input_ids=ids).logits[0]
    return forward


# Positions whose fp32 log-probabilities are computed at once: 128 x a 49k vocabulary is 25 MB, under glibc's
# largest mmap threshold, so the buffers are reused from the heap instead of mapped and faulted in afresh for every
# window (on a 2-core Xeon a 1,024-token window scored 1.7-2.4 s instead of 1.0-1.1 s at an anytime checkpoint,
# where the training state holds the freed memory). Rows are independent: the same values as one call.
NLL_CHUNK = 128


def window_nll(logits: torch.Tensor, window: Window) -> torch.Tensor:
    """Summed negative log-likelihood (float64, on the device) of the window's targets."""
    first = len(window.inputs) - len(window.targets)
    targets = torch.tensor(window.targets, device=logits.device)
    total = torch.zeros((), dtype=torch.float64, device=logits.device)
    for i in range(0, len(window.targets), NLL_CHUNK):
        logp = torch.log_softmax(logits[first + i:first + i + NLL_CHUNK].float(), dim=-1)
        total -= logp.gather(1, targets[i:i + NLL_CHUNK, None]).sum(dtype=torch.float64)
    return total


def query_windows(loaded: LoadedModel, text: str, cfg: EvalConfig) -> Tuple[List[int], List[Window], int]:
    """The text's tokens, its scoring windows and the bytes its BPB is divided by."""
    tokens = loaded.tokenizer(text, add_special_tokens=False).input_ids
    if not tokens:
        raise ValueError("cannot score an empty text")
    length = min(cfg.window, loaded.context_length)
    windows = scoring_windows(tokens, prefix_token_id(loaded.tokenizer, cfg.prefix_token), cfg, length)
    scored = [t for w in windows for t in w.targets]
    if cfg.protocol == Protocol.first_window and cfg.bytes == ByteCount.scored:
        n_bytes = len(loaded.tokenizer.decode(scored).encode("utf-8"))
    else:
        n_bytes = len(text.encode("utf-8"))
    if not scored or n_bytes == 0:
        raise ValueError("the text has no token to score under this eval config (a one-token text with "
                         "eval.prefix=false?)")
    return tokens, windows, n_bytes


@torch.no_grad()
def score_text(loaded: LoadedModel, text: str, cfg: EvalConfig, forward=None, context: Sequence[int] = ()) -> Score:
    """`forward` maps a window's inputs to its logits (default: eager; the CUDA path passes a captured one).
    `context` (in-context retrieval) is placed before every window's inputs; only the text's tokens are scored.
    Windows with a context run eagerly (captured graphs are sized for the windows alone)."""
    start = time.perf_counter()
    _, windows, n_bytes = query_windows(loaded, text, cfg)
    if context:
        prefixed = cfg.protocol == Protocol.rolling or cfg.prefix
        windows = with_context(windows, context, prefix_token_id(loaded.tokenizer, cfg.prefix_token)
                               if prefixed else None)
        forward = None
    forward = forward or eager_logits(loaded)
    was_training = loaded.model.training
    loaded.model.eval()
    nll = torch.zeros((), dtype=torch.float64, device=loaded.device)
    for w in windows:
        nll += window_nll(forward(w.inputs), w)
        progress.mark()
    loaded.model.train(was_training)
    total = float(nll)  # one device sync for the whole text
    return Score(total, sum(len(w.targets) for w in windows), n_bytes, time.perf_counter() - start,
                 forwarded=sum(len(w.inputs) for w in windows), token_pairs=sum(len(w.inputs) ** 2 for w in windows))
