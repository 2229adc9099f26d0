"""lm-eval's request types as query runs: the prompt is adapted exactly as run.py adapts a query document (embed,
retrieve, select, then the method: finetune, read in context, merge, ...), and `score` answers the request instead
of the rolling BPB. The method calls `run.score(context)` with the weights adapted and, for in-context reading,
the selection's tokens to place first; the weights are reset after.

- `ContinuationRun` (loglikelihood): every continuation of one prompt scored as lm-eval's HFLM scores it (the
  prompt and continuation tokens cut to the model's context from the left, the continuation's log-probabilities
  summed, greedy when each is the argmax); its record's BPB is over the continuations' bytes, its base the base
  model's on the same continuations;
- `GenerationRun` (generate_until): greedy generation after the prompt, cut at the first stop sequence.
"""
from __future__ import annotations

import math
import time
from typing import List, Sequence, Tuple

import torch

from hullft.config import DType
from hullft.errors import UserError
from hullft.per_query import QueryRun
from hullft.scoring.bpb import Score, eager_logits


class _BaseNow:
    """The base model's answer to the run's request, computed when asked (before the adaptation)."""

    def __init__(self, run):
        self.run = run

    def get(self, text: str) -> Score:
        return self.run.base_score()


class ContinuationRun(QueryRun):
    def __init__(self, *args, pairs: Sequence[Tuple[List[int], List[int], int]], **kwargs):
        super().__init__(*args, **kwargs)
        self.pairs = pairs  # (prompt tokens, continuation tokens, continuation bytes)
        self.answers: List[Tuple[float, bool]] = []
        self.base_cache = _BaseNow(self)

    def base_score(self) -> Score:
        return self.score()

    @torch.no_grad()
    def score(self, context: Sequence[int] = ()) -> Score:
        start, forward, length = time.perf_counter(), eager_logits(self.loaded), self.loaded.context_length
        was_training = self.loaded.model.training
        self.loaded.model.eval()
        answers, forwarded, pairs = [], 0, 0
        for prompt, continuation, _ in self.pairs:
            inputs = (list(context) + list(prompt) + list(continuation))[-(length + 1):][:-1]
            logp = torch.log_softmax(forward(inputs)[-len(continuation):].float(), dim=-1)
            targets = torch.tensor(continuation, device=logp.device)
            answers.append((float(logp.gather(1, targets[:, None]).sum()), bool((logp.argmax(-1) == targets).all())))
            forwarded, pairs = forwarded + len(inputs), pairs + len(inputs) ** 2
        self.loaded.model.train(was_training)
        self.answers = answers
        return Score(-sum(ll for ll, _ in answers), sum(len(c) for _, c, _ in self.pairs),
                     max(1, sum(b for *_, b in self.pairs)), time.perf_counter() - start, forwarded, pairs)


class GenerationRun(QueryRun):
    def __init__(self, *args, prompt: List[int], until: Sequence[str], max_tokens: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.prompt, self.until, self.max_tokens = prompt, list(until), max_tokens
        self.answers: List[str] = []
        self.base_cache = _BaseNow(self)

    def base_score(self) -> Score:
        return Score(math.nan, 0, 1, 0.0)  # nothing to compare a generation with: its record's bpb_pct is NaN

    @torch.no_grad()
    def score(self, context: Sequence[int] = ()) -> Score:
        start, loaded = time.perf_counter(), self.loaded
        room = loaded.context_length - self.max_tokens
        if room < 1:
            raise UserError(f"max_gen_toks={self.max_tokens}: leaves no room for the prompt in the model's "
                            f"{loaded.context_length} tokens; lower it in the task's generation_kwargs")
        inputs = (list(context) + list(self.prompt))[-room:]
        was_training = loaded.model.training
        loaded.model.eval()
        ids = torch.tensor([inputs], device=loaded.device)
        with torch.autocast(loaded.device.type, dtype=torch.bfloat16, enabled=loaded.dtype == DType.bf16):
            out = loaded.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=self.max_tokens,
                                        do_sample=False, pad_token_id=loaded.tokenizer.eos_token_id)
        loaded.model.train(was_training)
        text = loaded.tokenizer.decode(out[0, len(inputs):].tolist(), skip_special_tokens=True)
        for stop in self.until:
            if stop and stop in text:
                text = text[:text.index(stop)]
        self.answers = [text]
        generated = out.shape[1] - len(inputs)
        return Score(math.nan, generated, max(1, len(text.encode("utf-8"))), time.perf_counter() - start,
                     forwarded=out.shape[1], token_pairs=out.shape[1] ** 2)
