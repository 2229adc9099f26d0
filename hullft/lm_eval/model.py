"""The harness as an lm-evaluation-harness model: every request adapted as run.py adapts a query document.

    from hullft.lm_eval.model import HullftLM
    lm_eval.simple_evaluate(model=HullftLM(["selector=nn", "budget=8"]), tasks=["wikitext"])

`HullftLM` takes the harness's Hydra overrides (model, embedder, data space, selector, method, engine, budget;
as a list, or as keys: `HullftLM(selector="nn", budget=8)`, which is how `--model_args` reaches it) and serves
- `loglikelihood_rolling`: per document, what run.py does for a query document: embed, retrieve, select, adapt by
  the configured method, score the rolling windows, reset;
- `loglikelihood`: per distinct prompt (context), adapt once, score each of its continuations, reset;
- `generate_until`: adapt on the prompt, generate greedily, reset.
Retrieved pool sequences overlapping the document (the prompt with its continuations) are dropped before selection
(leakage.py). Each request's adaptation is one record, the schema of run.py's (query_id `<task>/<doc_id>`, domain
the task), in `records/` beside config.yaml, so `python -m hullft.report <records>` reads an lm-eval run as any.
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List, Sequence

from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

from hullft.compose import compose_config
from hullft.engine.finetune import FinetuneEngine
from hullft.errors import UserError
from hullft.lm_eval.leakage import run_length, screen_for
from hullft.lm_eval.requests import ContinuationRun, GenerationRun
from hullft.methods import Job
from hullft.per_query import QueryRun
from hullft.runner import assemble, constant_fields, job_files, scoring_forward, warm_up
from hullft.scoring.base_score import BaseScoreCache
from hullft.scoring.bpb import prefix_token_id

log = logging.getLogger(__name__)


def as_overrides(keys: Dict) -> List[str]:
    """{"selector": "nn", "budget": 8} -> ["selector=nn", "budget=8"], values written as Hydra reads them."""
    def shown(value) -> str:
        if value is None:
            return "null"
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, (list, tuple)):
            return "[" + ",".join(shown(v) for v in value) + "]"
        return str(value)
    return [f"{key}={shown(value)}" for key, value in keys.items()]


@register_model("hullft")
class HullftLM(TemplateLM):
    def __init__(self, overrides: Sequence[str] = (), records: str | None = None, batch_size=None, device=None,
                 max_batch_size=None, **keys):
        super().__init__()
        overrides = [*overrides, *as_overrides(keys)]
        cfg = compose_config(overrides)
        if list(cfg.checkpoints):
            raise UserError(f"checkpoints={list(cfg.checkpoints)}: an lm-eval request is answered once; use "
                            f"checkpoints=[]")
        self.cfg = cfg
        self.out = Path(records or Path("outputs") / "lm_eval" / time.strftime("%Y%m%d-%H%M%S"))
        self.job = assemble(cfg, self.out)
        with job_files(self.out, self.job.plain, overrides):
            pass  # config.yaml and overrides.yaml beside the records, as a run.py job's
        job, loaded = self.job, self.job.loaded
        self.engine = FinetuneEngine(loaded, cfg.engine, expected_steps=cfg.budget * 1000 if job.method.trains else 0)
        job.method.prepare(Job(cfg, loaded, job.space, job.embedder))
        warm_up(self.engine, loaded, cfg, loaded.tokenizer.decode(job.space.pool.tokens(0)))
        self.forward = scoring_forward(self.engine, cfg)
        self.base = BaseScoreCache(loaded, cfg.eval, self.forward)
        self.constant = constant_fields(job.store, loaded, self.engine, cfg)
        self.documents, self.leaky = 0, 0
        self._origins: Dict[str, object] = {}  # a loglikelihood prompt -> its first request (task, doc_id)

    # what lm-eval's TemplateLM needs to tokenize requests as HFLM does
    @property
    def eot_token_id(self) -> int:
        return self.job.loaded.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        return prefix_token_id(self.job.loaded.tokenizer, self.cfg.eval.prefix_token)

    def tok_encode(self, string: str, **kwargs) -> List[int]:
        return self.job.loaded.tokenizer(string, add_special_tokens=False).input_ids

    @property
    def tokenizer_name(self) -> str:
        return self.job.loaded.name

    # the requests
    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> List[float]:
        answers = []
        for request in requests:
            (text,) = request.args[:1]
            query = self._query(request, text)
            tokens = self.tok_encode(text)
            run = self._run(QueryRun, query, [tokens], request)
            answers.append(-run.last["nll_nats"])
        self._say_leaks()
        return answers

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> List[tuple]:
        self._serves(requests, "loglikelihood")
        self._origins = {request.args[0]: request for request in reversed(requests)}
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> List[tuple]:
        by_prompt: Dict[str, List[int]] = {}
        for i, ((context, _), _, _) in enumerate(requests):
            by_prompt.setdefault(context, []).append(i)
        answers: List = [None] * len(requests)
        for context, members in by_prompt.items():
            pairs = [(requests[i][1], requests[i][2], len(requests[i][0][1].encode("utf-8"))) for i in members]
            origin = self._origins.get(context)
            run = self._run(ContinuationRun, self._query(origin, context), [p + c for p, c, _ in pairs], origin,
                            pairs=pairs)
            for i, answer in zip(members, run.answers):
                answers[i] = answer
        self._say_leaks()
        return answers

    def generate_until(self, requests, disable_tqdm: bool = False) -> List[str]:
        self._serves(requests, "generate_until")
        answers = []
        for request in requests:
            context, gen_kwargs = request.args
            gen_kwargs = dict(gen_kwargs or {})
            if gen_kwargs.get("do_sample") or gen_kwargs.get("temperature", 0) not in (0, 0.0, None):
                raise UserError(f"task {request.task_name}: generation_kwargs {gen_kwargs} samples; this model "
                                f"generates greedily: set do_sample: false, temperature: 0")
            until = gen_kwargs.get("until") or [self.job.loaded.tokenizer.decode([self.eot_token_id])]
            prompt = self.tok_encode(context)
            run = self._run(GenerationRun, self._query(request, context), [prompt], request, prompt=prompt,
                            until=[until] if isinstance(until, str) else until,
                            max_tokens=int(gen_kwargs.get("max_gen_toks", 256)))
            answers.append(run.answers[0])
        self._say_leaks()
        return answers

    # one request's adaptation, recorded
    def _serves(self, requests, kind: str) -> None:
        method = self.job.method
        if requests and method.scores_own_windows:
            raise UserError(f"method={method.name} cannot serve {kind} requests (task {requests[0].task_name}): it "
                            f"adapts while scoring a document's own windows; use it on loglikelihood_rolling tasks, "
                            f"or method=finetune, incontext, finetune+incontext, merge or none")

    @staticmethod
    def _query(request, text: str) -> SimpleNamespace:
        task = getattr(request, "task_name", None) or "lm_eval"
        doc = getattr(request, "doc_id", None)
        if not text.strip():
            raise UserError(f"task {task}: document {doc} is empty; check the task's dataset and its "
                            f"doc_to_text/doc_to_target")
        return SimpleNamespace(doc_id=f"{task}/{doc}", domain=task, text=text)

    def _run(self, kind, query, documents, request, **extra):
        job = self.job
        run = kind(query, self.cfg, job.space, job.loaded, job.embedder, job.selector, self.engine, self.base,
                   self.forward, job.method, screen=screen_for(documents, self._run_length(query.text),
                                                                 job.space.pool.tokens), **extra)
        run.select()
        records = [{**r, **self.constant, "request": getattr(request, "request_type", "")} for r in run.records()]
        if not job.store.append_query(records):
            log.warning("request %s was recorded before in %s; this answer is not recorded again", query.doc_id,
                        self.out)
        run.last = records[-1]
        self.documents += 1
        self.leaky += run.leaked > 0
        return run

    def _run_length(self, text: str) -> int:
        return run_length(len(self.tok_encode(text)), len(text))

    def _say_leaks(self) -> None:
        print(f"hullft: {self.leaky} of {self.documents} documents had retrieved pool sequences overlapping them "
              f"(dropped before selection; records: leaked, in {self.out})", file=sys.stderr)
        self.job.store.write_parquet()
