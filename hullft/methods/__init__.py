"""How a query is adapted and scored once it is retrieved and selected: one option of the `method` group each.

    evaluation = method.score(run, selection)

A method says whether it needs a selection (`retrieves`: embed the query, search the pool, select) and
whether the engine trains on that selection first (`trains`: one optimizer step per element, Gradient Reuse,
checkpoints on the way); `score` then scores the query (`hullft.scoring.bpb`: the same windows, the same
query tokens and bytes for every method) and returns an `Evaluation`. The runner and `QueryRun` know nothing
else of a method; a selector knows nothing of methods.

    finetune.py            finetune            train on the selection, score the query (the default)
    incontext.py           incontext           no training: the selection's text before every scoring window
    finetune_incontext.py  finetune+incontext  train on the selection, then score with it in context
    dynamic_eval.py        dynamic_eval        no retrieval: score segment by segment, train on what was scored
    base_model.py          none                no retrieval, no training: the base model on the same clock
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from hullft.engine.finetune import FinetuneResult
from hullft.scoring.bpb import Score


@dataclass
class Evaluation:
    score: Score
    context_tokens: int = 0                    # tokens placed before every scoring window
    training: Optional[FinetuneResult] = None  # training done while scoring (dynamic evaluation)


NO_TRAINING = FinetuneResult(fwd_bwd=0, opt_steps=0, diverged=False, mean_loss=float("nan"), tokens=0, seconds=0.0)
