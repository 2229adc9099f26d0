"""method=dynamic_eval: dynamic evaluation (Krause et al. 2018, 2019), no retrieval.

The query's scoring windows (the same as every method's) are cut into segments of `segment` scored tokens.
Each segment is scored first, with the context its tokens have in their window (a forward over the window's
inputs up to the segment's end), and then the engine takes `steps` optimizer steps (its optimizer and
settings, a fresh optimizer state per segment as for any engine call) on the last `data.max_length` query
tokens scored so far, except after the last segment (nothing is scored after it). So every token is scored
before any step has seen it. The weights are reset after the
query, as after any method. `t_eval` is the scoring, `t_finetune` the training in between.
"""
from __future__ import annotations

import time
from typing import List

import torch

from hullft.engine.finetune import FinetuneResult
from hullft.methods import Evaluation, Method
from hullft.scoring.bpb import Score, Window, eager_logits, query_windows, window_nll


def selection_free_problems(name: str, cfg) -> List[str]:
    """A method that selects nothing has no n to checkpoint or adapt."""
    problems = []
    if list(cfg.checkpoints):
        problems.append(f"checkpoints={list(cfg.checkpoints)}: method={name} selects nothing, so it has no steps "
                        f"to score at; use checkpoints=[]")
    if cfg.alpha is not None:
        problems.append(f"alpha={cfg.alpha}: method={name} selects nothing, so there is no budget to adapt; "
                        f"use alpha=null")
    return problems


def merged(parts: List[FinetuneResult]) -> FinetuneResult:
    losses = [(p.mean_loss, p.fwd_bwd) for p in parts if p.fwd_bwd]
    return FinetuneResult(
        fwd_bwd=sum(p.fwd_bwd for p in parts), opt_steps=sum(p.opt_steps for p in parts),
        diverged=any(p.diverged for p in parts), tokens=sum(p.tokens for p in parts),
        mean_loss=sum(l * n for l, n in losses) / sum(n for _, n in losses) if losses else float("nan"),
        seconds=sum(p.seconds for p in parts), capture_seconds=sum(p.capture_seconds for p in parts),
        token_pairs=sum(p.token_pairs for p in parts))


class DynamicEval(Method):
    name = "dynamic_eval"
    retrieves = False
    trains = False  # not on a selection: it trains on the query while scoring it
    scores_own_windows = True

    def __init__(self, steps: int = 1, segment: int = 128):
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"method.steps={steps}: must be a number of optimizer steps >= 0")
        if not isinstance(segment, int) or segment < 1:
            raise ValueError(f"method.segment={segment}: must be a positive number of tokens")
        self.steps, self.segment = steps, segment
        self.segment_nll: List[float] = []  # of the last query, segment by segment (tests read it)

    def config_problems(self, cfg, context_length: int) -> list:
        return selection_free_problems(self.name, cfg)

    def score(self, run, selection) -> Evaluation:
        loaded, engine = run.loaded, run.engine
        tokens, windows, n_bytes = query_windows(loaded, run.query.text, run.cfg.eval)
        forward, train_length = eager_logits(loaded), run.cfg.data.max_length
        training, scoring, done, forwarded, self.segment_nll = [], 0.0, 0, [], []
        total = sum(len(w.targets) for w in windows)
        for w in windows:
            offset = len(w.inputs) - len(w.targets)  # where the window's scored positions start
            for start in range(0, len(w.targets), self.segment):
                end = min(start + self.segment, len(w.targets))
                clock = time.perf_counter()
                segment = Window(w.inputs[:offset + end], w.targets[start:end])
                was_training = loaded.model.training
                loaded.model.eval()
                with torch.no_grad():
                    self.segment_nll.append(float(window_nll(forward(segment.inputs), segment)))
                loaded.model.train(was_training)
                scoring += time.perf_counter() - clock
                forwarded.append(len(segment.inputs))
                done += end - start
                seen = tokens[max(0, done - train_length):done]
                if self.steps and len(seen) >= 2 and done < total:  # nothing is scored after the last segment
                    training.append(engine.finetune([seen], [self.steps]))
        score = Score(sum(self.segment_nll), done, n_bytes, scoring, forwarded=sum(forwarded),
                      token_pairs=sum(t * t for t in forwarded))
        return Evaluation(score, training=merged(training) if training else None)
