"""method=merge: test-time model merging (TTMM, Bertolissi, Hübotter et al., COLM 2025; `ttmerge`'s rule).

Once per job, the experts (hullft/experts/: one LoRA adapter per k-means cluster of the pool, trained once and
cached as a stage of the data space) are built where missing and loaded. Per query: the query is embedded as for
every method; the experts are weighted by ttmerge's affinity (`beta`, `tau`, `max_experts`) and their weighted delta
added to the base weights, written beside them so that undoing it is pointing back (hullft/experts/merging.py);
every window is scored; the weights are restored bit for bit. Records say whether the merge ran fused or
through torch's addmm (`merge_path`; the report keeps the two apart). Nothing is retrieved from the pool and nothing is
trained at test time. The weighting, the merge and its undoing are the record's t_select; records carry how many
experts were merged and their share of the kernel's mass, and the experts' one-time cost (t_offline,
offline_flops). A query with no expert above tau is scored by the base model (experts_merged = 0), as ttmerge does.
"""
from __future__ import annotations

import time
from typing import List, Optional

from hullft.experts.merging import MergedAdapters, expert_mixture, scoring_dtype
from hullft.experts.settings import ExpertSettings
from hullft.experts.stage import load_experts
from hullft.methods import Evaluation, Job, Method, MethodRun
from hullft.methods.dynamic_eval import selection_free_problems


class Merge(Method):
    name = "merge"
    retrieves = False
    trains = False

    def __init__(self, beta: float = 0.2, tau: float = 0.01, max_experts: int = 50, experts: Optional[dict] = None):
        if not isinstance(beta, (int, float)) or not beta > 0:
            raise ValueError(f"method.beta={beta}: must be a number > 0 (the kernel's width)")
        if not isinstance(tau, (int, float)) or not 0 <= tau < 1:
            raise ValueError(f"method.tau={tau}: must be in [0, 1) (the least weight an expert is merged with)")
        if not isinstance(max_experts, int) or isinstance(max_experts, bool) or max_experts < 1:
            raise ValueError(f"method.max_experts={max_experts}: must be an integer >= 1")
        self.beta, self.tau, self.max_experts = float(beta), float(tau), max_experts
        self.settings = ExpertSettings(**dict(experts or {}))
        self.experts, self.adapters = None, None

    def config_problems(self, cfg, context_length: int) -> List[str]:
        problems = selection_free_problems(self.name, cfg)
        if cfg.engine.lora:
            problems.append("engine.lora=true: method=merge trains nothing at test time (its experts are LoRA "
                            "adapters of method.experts.rank); use engine.lora=false")
        return problems

    def prepare(self, job: Job) -> None:
        self.experts = load_experts(job.cfg, job.space, job.loaded.fingerprint)
        self.adapters = MergedAdapters(job.loaded.model, self.experts.adapters, self.experts.scalings,
                                       scoring_dtype(job.loaded))

    def score(self, run: MethodRun, selection) -> Evaluation:
        query = run.query_embedding()
        in_place = run.engine is not None and run.engine.captured  # captured scoring reads the weights' storage
        start = time.perf_counter()
        chosen, coefficients, mass = expert_mixture(query, self.experts.centroids, self.beta, self.tau,
                                                    self.max_experts)
        self.adapters.add(chosen, coefficients, in_place)
        if in_place and chosen:
            run.engine.dirty = True
        adapt = time.perf_counter() - start
        try:
            score = run.score()
        finally:
            start = time.perf_counter()
            self.adapters.restore()
            adapt += time.perf_counter() - start
        return Evaluation(score, adapt_seconds=adapt, experts_merged=len(chosen), experts_weight=mass,
                          offline_seconds=self.experts.cost["seconds"], offline_flops=self.experts.cost["flops"],
                          merge_path=self.adapters.path)
