"""One TTFT job: per query, retrieve the K nearest pool sequences, select a multiset, finetune, score, reset."""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Sequence

import pandas as pd
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from hullft.scoring.base_score import BaseScoreCache
from hullft.scoring.bpb import score_text
from hullft.cache import REPO_ROOT, content_hash
from hullft.claims import Claims
from hullft.data import DataSpace, load_data_space
from hullft.data.documents import unit_hash
from hullft.embedder import Embedder
from hullft.engine.cuda_graphs import CapturedLogits
from hullft.engine.finetune import FinetuneEngine
from hullft.errors import ConfigError, UserError
from hullft.signals import stop_on_signals
from hullft.loggers import make_logger
from hullft.methods import Job
from hullft.hardware import cpu_name
from hullft.models import load_model, resolve_dtype
from hullft.per_query import QueryRun, selector_name
from hullft.records import RecordStore
from hullft.validate import check_config, check_writable

log = logging.getLogger(__name__)
NOT_HASHED = ("shard", "num_shards", "worker", "logger")
CANDIDATE_BYTES = 256 << 20  # the candidates a block of queries holds between its retrieval and its training
# Queries a worker claims at a time (and selects for before training them): small, so that workers sharing a
# directory share its queries evenly; a block's selections still run before its training (see per_query.py).
CLAIM_BLOCK = 8


def config_hash(plain: Dict) -> str:
    """Identifies what a record measured (from the resolved config); shards of one run share it, so they merge."""
    return content_hash({k: v for k, v in plain.items() if k not in NOT_HASHED})


def git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def build_selector(cfg: DictConfig):
    return build_option(cfg, "selector")


def build_option(cfg: DictConfig, group: str):
    """A selector or method from its config group; a bad key or value is one line naming the group."""
    try:
        return instantiate(cfg)
    except InstantiationException as e:
        cause = e.__cause__ or e
        raise UserError(f"{group}={cfg.get('name', cfg.get('_target_'))}: cannot be built "
                        f"({str(cause).splitlines()[0]}); check its keys in conf/{group}/") from None


@contextmanager
def job_files(out_dir: Path, plain: Dict, overrides: Sequence[str]):
    """Once a job is accepted: its directory, the resolved config and overrides, and run.log."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(plain)))
    (out_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
    handler = logging.FileHandler(out_dir / "run.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def pick_queries(space: DataSpace, cfg: DictConfig, sharded: bool = True) -> pd.DataFrame:
    """queries_per_domain held-out documents per domain, chosen by query_seed, in rounds over the domains (each
    domain's first query, then each one's second, ...: a run stopped early has scored every domain alike); then
    this job's shard."""
    q = space.queries
    q = q.assign(order=[unit_hash(cfg.query_seed, "query", d) for d in q.doc_id])
    q = q.sort_values(["domain", "order"]).groupby("domain", group_keys=False).head(cfg.queries_per_domain)
    q = q.assign(round=q.groupby("domain").cumcount()).sort_values(["round", "domain"]).reset_index(drop=True)
    return space.with_text(q.iloc[cfg.shard::cfg.num_shards]) if sharded else q


def scoring_forward(engine: FinetuneEngine, cfg: DictConfig):
    """Captured scoring windows where the training steps are captured; None (eager) elsewhere."""
    if not engine.captured:
        return None
    forward = CapturedLogits(engine.model, engine.loaded.dtype, engine.device, cfg.engine.bucket,
                             engine.loaded.context_length, emulate=engine.steps.emulate)
    forward.prepare(cfg.eval.window)
    return forward


@dataclass
class Assembled:
    """What a job runs with, once its config and data are accepted (also lm-eval's model: hullft/lm_eval/)."""
    plain: Dict
    store: RecordStore
    selector: object
    method: object
    loaded: object
    embedder: Embedder
    space: DataSpace


def assemble(cfg: DictConfig, out_dir: Path) -> Assembled:
    """Checks first (nothing is written until the job is accepted), then the job's parts."""
    check_config(cfg)
    check_writable(out_dir, "hydra.run.dir", out_dir / "wandb" if cfg.logger.wandb else None)
    cfg.model.dtype = resolve_dtype(cfg.model)  # the precision used: in the hash, config.yaml and every record
    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    store = RecordStore(out_dir, config_hash(plain))  # another config's directory is refused here
    selector = build_selector(cfg.selector)
    method = build_option(cfg.method, "method")
    loaded = load_model(cfg.model)
    problems = method.config_problems(cfg, loaded.context_length)
    if problems:
        raise ConfigError(problems)
    embedder = Embedder(cfg.embedder)
    space = load_data_space(cfg.data, loaded.tokenizer, loaded.fingerprint, embedder)
    if len(space.pool) < cfg.k:
        raise UserError(f"k={cfg.k}: the pool holds only {len(space.pool)} sequences; lower k")
    data_key = content_hash(space.key, loaded.fingerprint, embedder.fingerprint)
    store.accept_data(data_key)  # the same config over changed data is refused here
    return Assembled(plain, store, selector, method, loaded, embedder, space)


def run_job(cfg: DictConfig, out_dir: Path, group: str = "", name: str = "",
            overrides: Sequence[str] = ()) -> pd.DataFrame:
    """The job's parts (refused before anything is written), then the query loop."""
    job = assemble(cfg, out_dir)
    with job_files(out_dir, job.plain, overrides), stop_on_signals():
        return _query_loop(cfg, out_dir, group, name, job.plain, job.store, job.selector, job.method, job.loaded,
                           job.embedder, job.space)


def constant_fields(store: RecordStore, loaded, engine: FinetuneEngine, cfg: DictConfig) -> Dict:
    """What every record of a job carries besides its query's own fields."""
    return {"model": loaded.name, "config_hash": store.config_hash, "data_key": store.data_key,
            "git_sha": git_sha(), "device": str(loaded.device), "cpu": cpu_name(), "dtype": loaded.dtype.value,
            "compiled": engine.compiled, "sparse_embedding_grad": engine.sparse_embedding_grad,
            "shard": int(cfg.shard), "num_shards": int(cfg.num_shards),
            "process": f"{socket.gethostname()}:{os.getpid()}"}


def warm_up(engine: FinetuneEngine, loaded, cfg: DictConfig, text: str) -> None:
    """One-off costs (thread pools, oneDNN primitives, the allocator's first pages: over a second for the first
    scoring forward of a process) are paid here, untimed, not by the first query's clock: a scoring forward and
    a training step on the start of a query, then the weights are reset."""
    tokens = loaded.tokenizer(text, add_special_tokens=False).input_ids[:64]
    if len(tokens) >= 2:
        score_text(loaded, loaded.tokenizer.decode(tokens), cfg.eval)
        engine.finetune([tokens], [1])
        engine.reset()


def _run_claimed_blocks(store, claims, queries, block, progress, constant, logger, query_run) -> None:
    """Claim a block of queries, select for all of them, then train and record each; until every query is
    recorded (waiting for those other workers hold, and running those whose holders died)."""
    while True:
        todo = claims.next_block(store, queries, block)
        if not todo:
            return
        runs = [query_run(query) for query in todo]
        for run in runs:  # selection reads the data space only: all of the block's before its training
            run.select()
        for run in runs:
            records = [{**record, **constant} for record in run.records()]
            if store.append_query(records):
                for record in records:
                    logger.log_query(record)
            else:
                log.warning("query %s was recorded by another worker meanwhile (this one held its claim past "
                            "its heartbeat's bound); its records here are dropped", run.query.doc_id)
            claims.release(run.query.doc_id)
            progress.update()


def _query_loop(cfg, out_dir, group, name, plain, store, selector, method, loaded, embedder, space) -> pd.DataFrame:
    queries = pick_queries(space, cfg)
    if queries.empty:
        log.info("shard=%d holds no query: %d queries over num_shards=%d; nothing to run, an empty result written",
                 cfg.shard, len(pick_queries(space, cfg, sharded=False)), cfg.num_shards)
        store.write_parquet()
        return store.frame()
    log.info("%d queries (%d already done) in %s", len(queries), queries.doc_id.isin(store.done).sum(), out_dir)
    left = int((~queries.doc_id.isin(store.done)).sum())
    if left:  # a finished job reruns without its method's one-off work (merge's experts)
        method.prepare(Job(cfg, loaded, space, embedder))
    engine = FinetuneEngine(loaded, cfg.engine, expected_steps=left * cfg.budget if method.trains else 0)
    warm_up(engine, loaded, cfg, queries.text.iloc[0])
    forward = scoring_forward(engine, cfg)
    base = BaseScoreCache(loaded, cfg.eval, forward)
    logger = make_logger(cfg.logger, plain, out_dir, group, name or out_dir.name)
    constant = constant_fields(store, loaded, engine, cfg)
    label = method.name
    if method.retrieves:
        label += f" {selector_name(selector)} n={cfg.budget}" + ("" if cfg.alpha is None else f" alpha={cfg.alpha}")
    block = max(1, min(CLAIM_BLOCK, CANDIDATE_BYTES // (cfg.k * space.embeddings.shape[1] * 4)))
    with tqdm(total=left, desc=f"TTFT {label}", unit="query", file=sys.stderr) as progress, \
            Claims(out_dir, lock=store.lock) as claims:
        try:
            _run_claimed_blocks(store, claims, queries, block, progress, constant, logger,
                                lambda query: QueryRun(query, cfg, space, loaded, embedder, selector, engine,
                                                       base, forward, method))
        finally:  # also on SIGTERM: records.parquet holds every record in records.jsonl
            store.write_parquet()
    if engine.captured:
        log.info("CUDA-graph capture in this job: %.2f s for training steps, %.2f s for scoring windows "
                 "(outside every query's t_finetune and t_eval)", engine.steps.capture_seconds,
                 forward.capture_seconds)
    records = store.frame()
    logger.finish(records, out_dir)
    return records
