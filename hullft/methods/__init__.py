"""How a query is adapted and scored once it is retrieved and selected: one option of the `method` group each.

    method.prepare(job)                        # once per job, before its queries (e.g. merge's experts)
    evaluation = method.score(run, selection)  # per query (and per checkpoint)

A method (the `Method` protocol below) says whether it needs a selection (`retrieves`: embed the query, search
the pool, select) and whether the engine trains on that selection first (`trains`: one optimizer step per
element, Gradient Reuse, checkpoints on the way); `score` then scores the query through `run` (a `MethodRun`:
the same windows, query tokens and bytes for every method) and returns an `Evaluation`. The runner and `QueryRun`
know nothing else of a method; a selector knows nothing of methods. The weights are reset after every score.

    finetune.py            finetune            train on the selection, score the query (the default)
    incontext.py           incontext           no training: the selection's text before every scoring window
    finetune_incontext.py  finetune+incontext  train on the selection, then score with it in context
    dynamic_eval.py        dynamic_eval        no retrieval: score segment by segment, train on what was scored
    base_model.py          none                no retrieval, no training: the base model on the same clock
    merge.py               merge               no retrieval, no training at test time: the experts nearest the
                                               query merged into the weights (hullft/experts/)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from hullft.engine.finetune import FinetuneResult
from hullft.scoring.bpb import Score


@dataclass
class Evaluation:
    score: Score
    context_tokens: int = 0                    # tokens placed before every scoring window
    training: Optional[FinetuneResult] = None  # training done while scoring (dynamic evaluation)
    adapt_seconds: float = 0.0                 # choosing and applying an adaptation without training (merge's
    # weighting and merge): counted in the record's t_select
    experts_merged: int = 0
    experts_weight: float = math.nan           # the kernel's share held by the merged experts (merge)
    offline_seconds: float = 0.0               # one-time work the method relies on (merge's experts), in total
    offline_flops: float = 0.0
    merge_path: Optional[str] = None           # merge: "fused" or "torch" (their bf16 bits may differ)


@dataclass
class Job:
    """What a method may prepare from, once per job."""
    cfg: object          # the job's resolved config
    loaded: object       # hullft.models.LoadedModel
    space: object        # hullft.data.DataSpace
    embedder: object     # hullft.embedder.Embedder


@runtime_checkable
class MethodRun(Protocol):
    """What a method receives of one query (hullft/per_query.py's QueryRun)."""
    loaded: object       # the model, its tokenizer and precision
    cfg: object          # the job's config (eval, data, engine)
    query: object        # .text, .doc_id, .domain
    space: object        # .pool.tokens(row): the pool's sequences
    rows: np.ndarray     # the retrieved candidates' pool rows (a selection's indices point into them)
    engine: object       # the job's FinetuneEngine (dynamic evaluation trains while it scores)

    def score(self, context: Sequence[int] = ()) -> Score:
        """The query's BPB with the weights as they are now, `context` before every window."""

    def query_embedding(self) -> np.ndarray:
        """The query's unit embedding (computed once, timed as t_retrieve)."""


@runtime_checkable
class Method(Protocol):
    name: str
    retrieves: bool      # it needs a selection
    trains: bool         # the engine trains on the selection before `score`
    scores_own_windows: bool = False  # it adapts while scoring the document's own windows (dynamic_eval): it
    # answers a rolling score only, not a prompt's continuations or a generation (hullft/lm_eval/)

    def config_problems(self, cfg, context_length: int) -> List[str]:
        """Settings this method cannot run with, each a line naming the field and the fix."""
        return []

    def prepare(self, job: Job) -> None:
        """One-off work before the job's first query."""

    def score(self, run: MethodRun, selection) -> Evaluation:
        """Score the query (the weights are reset afterwards)."""


NO_TRAINING = FinetuneResult(fwd_bwd=0, opt_steps=0, diverged=False, mean_loss=float("nan"), tokens=0, seconds=0.0)
