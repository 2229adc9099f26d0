"""One query in three phases: retrieve (embed it, top-K rows, their embeddings), select, then adapt, score, reset.

How the selection is used is the query's `method` (hullft/methods/): finetune on it (the default), read it in
context, both, or neither (dynamic evaluation and the base model retrieve and select nothing).

The runner retrieves for a block of queries, then selects for all of them, then trains them: selection reads the
data space only, never the model, so it runs before the block's first training step and `t_select` measures the
selector rather than the state a training step, the embedder or a candidates' gather left the CPU in (see
README, Performance).

Usually one record. With `alpha`, the selection's size is chosen per query (hullft/selection/adaptive.py). With
`checkpoints`, one record per checkpoint as well, each what a standalone run at that n would record:
- a greedy selector (its first m picks are its selection at m) trains once to the budget and the prompt is
  also scored after step m, the clock stopped meanwhile; its m-selection is made and timed on its own and
  checked to be the prefix (and its step plan the first m steps) of the budget's. Where a near-tie was broken
  another way at m (a selector whose tie-breaking depends on n), that m is trained on its own instead, with a
  log line; `own_pass` tells a record trained in its own pass from one scored on the way of a longer one;
- any other selector (HullFT) runs each n separately, reusing the model, data space and base scores.
The last record of a query is marked `final`; a resumed job redoes a query that has none.
"""
from __future__ import annotations

import logging
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from hullft.selection.adaptive import select_adaptive
from hullft.engine.finetune import FinetuneResult, step_plan
from hullft.flops import forward_flops
from hullft.errors import UserError
from hullft.methods import NO_TRAINING, Evaluation
from hullft.methods.finetune import Finetune
from hullft.selection.multiset import Multiset
from hullft.selection.posterior import posterior_sigma
from hullft.scoring.bpb import Score, score_text
from hullft.selection.timing import timed_select

log = logging.getLogger(__name__)


def embed_query(text: str, tokenizer, embedder, max_length: int) -> np.ndarray:
    """Mean of the embeddings of the query's token-bounded chunks (as the pool is chunked), L2-normalised."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    chunks = tokenizer.batch_decode([ids[i:i + max_length] for i in range(0, len(ids), max_length)])
    mean = embedder.embed(chunks).mean(0)
    return (mean / np.linalg.norm(mean)).astype(np.float32)


def selector_name(selector) -> str:
    return getattr(selector, "name", type(selector).__name__.lower())


class QueryRun:
    """`screen` (optional): rows -> which of the retrieved pool rows may be selected (lm-eval's model drops those
    overlapping the document it evaluates: hullft/lm_eval/leakage.py): the candidates are then the K nearest that
    pass it, and the record counts those of the K nearest that did not, `leaked`."""

    def __init__(self, query, cfg, space, loaded, embedder, selector, engine, base, forward=None, method=None,
                 screen=None):
        self.query, self.cfg, self.space, self.loaded, self.embedder = query, cfg, space, loaded, embedder
        self.selector, self.engine, self.base_cache, self.forward = selector, engine, base, forward
        self.method = method or Finetune()
        self.q, self.rows, self.candidates, self.t_retrieve = None, np.zeros(0, np.int64), None, 0.0
        self.leaked = 0
        if self.method.retrieves:
            query_embedding = self.query_embedding()
            start = time.perf_counter()
            if screen is None:
                _, self.rows = space.search(query_embedding, cfg.k)
            else:  # the K nearest that pass the screen: twice as many searched, to stand in for those it drops
                _, nearest = space.search(query_embedding, min(2 * cfg.k, len(space.pool)))
                keep = screen(nearest)
                self.leaked, self.rows = int((~keep[:cfg.k]).sum()), nearest[keep][:cfg.k]
            self.candidates = space.candidates(self.rows)
            self.t_retrieve += time.perf_counter() - start
        self.plans: List[Tuple] = []  # (selection, t_select, budget, final, prefixes): filled by select()

    def query_embedding(self) -> np.ndarray:
        """The query's unit embedding, computed once; its seconds are part of t_retrieve."""
        if self.q is None:
            start = time.perf_counter()
            self.q = embed_query(self.query.text, self.loaded.tokenizer, self.embedder, self.cfg.data.max_length)
            self.t_retrieve += time.perf_counter() - start
        return self.q

    def select(self) -> None:
        """Every selection this query's records need, each timed."""
        cfg, marks = self.cfg, sorted(set(self.cfg.checkpoints))
        if not self.method.retrieves:
            self.plans = [(None, 0.0, 0, True, None)]
        elif cfg.alpha is not None:
            self.plans = [(*select_adaptive(self.selector, self.q, self.candidates, cfg.budget, cfg.alpha,
                                            cfg.llambda), cfg.budget, True, None)]
        elif marks and not getattr(self.selector, "greedy", False):
            self.plans = [(*timed_select(self.selector, self.q, self.candidates, n), n, n == cfg.budget, None)
                          for n in marks + [cfg.budget]]
        else:
            full, seconds = timed_select(self.selector, self.q, self.candidates, cfg.budget)
            prefixes, alone = {}, []
            for m in marks:
                part, part_seconds, is_prefix = self.checkpoint_selection(full, m)
                if is_prefix:
                    prefixes[m] = (part, part_seconds)
                else:  # a near-tie broken another way at m: m is trained on its own, as for a non-greedy selector
                    alone.append((part, part_seconds, m, False, None))
            self.plans = alone + [(full, seconds, cfg.budget, True, prefixes)]

    def records(self) -> List[Dict]:
        """Finetune and score each selection; the candidates are let go afterwards."""
        if not self.plans:
            self.select()
        self.base = self.base_cache.get(self.query.text)
        try:
            return [record for plan in self.plans for record in self.finetune_and_score(*plan)]
        finally:
            self.candidates = None

    def checkpoint_selection(self, full: Multiset, m: int) -> Tuple[Multiset, float, bool]:
        """The selection at m, its seconds, and whether it is the first m picks of `full`."""
        selection, seconds = timed_select(self.selector, self.q, self.candidates, m)
        if selection.ordered_rows().tolist() != full.ordered_rows()[:m].tolist():
            log.info("query %s: selector=%s's selection at n=%d is not the first %d picks of its selection at "
                     "n=%d (a near-tie broken another way); n=%d is trained on its own", self.query.doc_id,
                     selector_name(self.selector), m, m, self.cfg.budget, m)
            return selection, seconds, False
        if self.method.trains and self._plan_rows(selection) != self._plan_rows(full)[:m]:  # step order matters to training only
            raise UserError(f"checkpoints={list(self.cfg.checkpoints)}: with engine.order={self.cfg.engine.order.value} "
                            f"the {m}-step plan is not the first {m} steps of the budget's (repeats are trained "
                            f"together); use engine.order=as_selected")
        return selection, seconds, True

    def _plan_rows(self, selection: Multiset) -> list:
        plan = step_plan(selection.counts.tolist(), self.cfg.engine.order,
                         None if selection.picks is None else selection.picks.tolist())
        return selection.indices[plan].tolist()

    def finetune_and_score(self, selection: Optional[Multiset], t_select: float, budget: int, final: bool = True,
                           prefixes: Optional[Dict] = None) -> List[Dict]:
        """The records of one selection: its own, after those of the checkpoints `prefixes` asks for."""
        if selection is None and self.method.retrieves:  # the adaptive rule chose no step: the base model is it
            return [self.record(None, t_select, budget, NO_TRAINING, Evaluation(self.base), final)]
        found = []

        def at_checkpoint(m: int, so_far: FinetuneResult) -> None:
            part, seconds = prefixes[m]
            found.append(self.record(part, seconds, m, so_far, self.method.score(self, part), final=False,
                                     own_pass=False))

        result = NO_TRAINING
        if self.method.trains:
            result = self.engine.finetune([self.space.pool.tokens(r) for r in self.rows[selection.indices]],
                                          selection.counts.tolist(),
                                          None if selection.picks is None else selection.picks.tolist(),
                                          self.cfg.data.max_length, checkpoints=list(prefixes or ()),
                                          on_checkpoint=at_checkpoint)
        else:
            for m in sorted(prefixes or ()):
                at_checkpoint(m, result)
        evaluation = self.method.score(self, selection)
        record = self.record(selection, t_select, budget, evaluation.training or result, evaluation, final)
        self.engine.reset()
        return found + [record]

    def score(self, context=()) -> Score:
        return score_text(self.loaded, self.query.text, self.cfg.eval, self.forward, context)

    def record(self, selection: Optional[Multiset], t_select: float, budget: int, result: FinetuneResult,
               evaluation: Evaluation, final: bool, own_pass: bool = True) -> Dict:
        cfg, base, score = self.cfg, self.base, evaluation.score
        t_select += evaluation.adapt_seconds  # choosing and applying an adaptation without training (merge)
        selected = selection.ordered_rows() if selection is not None else np.zeros(0, dtype=np.int64)
        n = len(selected)
        return {
            "query_id": self.query.doc_id, "domain": self.query.domain, "method": self.method.name,
            "selector": selector_name(self.selector) if self.method.retrieves else "none",
            "context_tokens": evaluation.context_tokens,
            "n": n, "budget": int(budget), "pass_budget": int(cfg.budget), "final": final,
            "own_pass": own_pass,
            "alpha": float("nan") if cfg.alpha is None else float(cfg.alpha),
            "k": int(cfg.k), "refresh_interval": int(cfg.engine.refresh_interval),
            "distinct": int(len(np.unique(selected))), "fwd_bwd": result.fwd_bwd, "opt_steps": result.opt_steps,
            "bpb_base": base.bpb, "bpb": score.bpb, "bpb_pct": 100.0 * score.bpb / base.bpb,
            "sigma": posterior_sigma(self.q, self.candidates[selected], cfg.llambda)  # a diagnostic, untimed
            if self.method.retrieves else float("nan"),
            "nll_nats": score.nll_nats, "nll_nats_base": base.nll_nats,
            "t_retrieve": self.t_retrieve, "t_select": t_select,
            "t_finetune": result.seconds, "t_eval": score.seconds,
            "t_total": self.t_retrieve + t_select + result.seconds + score.seconds,
            "experts_merged": evaluation.experts_merged, "experts_weight": evaluation.experts_weight,
            "merge_path": evaluation.merge_path,
            "t_offline": evaluation.offline_seconds, "offline_flops": evaluation.offline_flops,
            "eval_flops": forward_flops(self.loaded.model, score.forwarded, score.token_pairs),
            "train_flops": 3 * forward_flops(self.loaded.model, result.tokens, result.token_pairs),
            "leaked": self.leaked, "t_capture": result.capture_seconds, "captured": self.engine.captured,
            "diverged": result.diverged,
            "train_loss": result.mean_loss, "train_tokens": result.tokens,
            "query_bytes": score.bytes, "query_bytes_base": base.bytes, "query_tokens": score.tokens,
            "same_domain": float(np.mean(self.space.pool.domains(self.rows[selected]) == self.query.domain))
            if n else float("nan"),
            "diagnostics": str(selection.diagnostics if selection is not None else {}),
        }

