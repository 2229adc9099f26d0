"""The data build's stages in the order a build runs them, as the CLI (`python -m hullft.data <stage>`) and a
one-process build run them. Each stage's work lives in build.py (documents, chunks, embeddings) or merge.py
(the pool and its index); this table is the only place that knows both.
"""
from __future__ import annotations

from typing import Callable

from hullft.config import DataConfig
from hullft.data import documents as docs_
from hullft.data.build import Keys, _chunk_unless_kept, embed_unit, kept_path, mine, plan, queries, scan, unit_count
from hullft.data.merge import merge


def _parts_stage(stage: str, work: Callable) -> Callable:
    def run(cfg: DataConfig, keys: Keys, tokenizer, embedder) -> str:
        parts = docs_.corpus_parts(cfg)
        done = mine(len(parts), cfg)
        for p in done:
            work(cfg, keys, p, parts)
        return f"{stage}: corpus parts {done} of {len(parts)}"
    return run


def _units_stage(stage: str, work: Callable) -> Callable:
    def run(cfg: DataConfig, keys: Keys, tokenizer, embedder) -> str:
        done = mine(unit_count(cfg, keys), cfg)
        for u in done:
            work(cfg, keys, u, tokenizer, embedder)
        return f"{stage}: units {done}"
    return run


def _documents_stage(cfg: DataConfig, keys: Keys, tokenizer, embedder) -> str:
    queries(cfg, keys, load=False)
    return f"documents: {unit_count(cfg, keys)} units of {cfg.unit_docs} pool documents"


def _plan_stage(cfg: DataConfig, keys: Keys, tokenizer, embedder) -> str:
    cuts = plan(cfg, keys, tokenizer)
    return f"plan: {sum(c is not None for c in cuts.values())} of {len(cuts)} domains capped"


def _merge_stage(cfg: DataConfig, keys: Keys, tokenizer, embedder) -> str:
    return f"merge: {merge(cfg, keys, len(tokenizer), embedder.dim)['rows']} pool sequences"


# stage -> run(cfg, keys, tokenizer, embedder) -> what it did; in the order a build runs them
STAGES = {
    "scan": _parts_stage("scan", scan),
    "keep": _parts_stage("keep", kept_path),
    "documents": _documents_stage,
    "chunk": _units_stage("chunk", lambda cfg, keys, u, tokenizer, _: _chunk_unless_kept(cfg, keys, u, tokenizer)),
    "plan": _plan_stage,
    "embed": _units_stage("embed", embed_unit),
    "merge": _merge_stage,
}
SHARDED_STAGES = ("scan", "keep", "chunk", "embed")  # data.shard of data.num_shards; the others: one process


def run_stage(stage: str, cfg: DataConfig, keys: Keys, tokenizer, embedder) -> str:
    """Run one stage (a sharded one for data.shard of data.num_shards); a line saying what was done."""
    return STAGES[stage](cfg, keys, tokenizer, embedder)


def build_all(cfg: DataConfig, keys: Keys, tokenizer, embedder) -> None:
    """Every stage in this process, in order."""
    for stage in STAGES:
        run_stage(stage, cfg, keys, tokenizer, embedder)
