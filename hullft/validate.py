"""One pass over the whole resolved config before any heavy work: every problem, one line each.

Types and enum values are Hydra's structured-config checks (hullft/config.py); this adds what a type cannot
say: ranges, combinations, paths, and keys that `+key=value` slipped past the schema.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tempfile
from pathlib import Path
from typing import Callable, List, Optional

from omegaconf import DictConfig, OmegaConf

from hullft.config import (ByteCount, Config, CorpusKind, DataConfig, EmbedderConfig, EmbedderKind, EngineConfig,
                           EvalConfig, LoggerConfig, ModelConfig, ModelKind, Protocol)
from hullft.data.corpus import DOMAINS
from hullft.data.jsonl import corpus_path_problems
from hullft.engine.finetune import graphs_wanted
from hullft.engine.compiled import compile_wanted
from hullft.errors import ConfigError

GROUP_SCHEMAS = {"model": ModelConfig, "embedder": EmbedderConfig, "data": DataConfig, "engine": EngineConfig,
                 "eval": EvalConfig, "logger": LoggerConfig}
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _int_at_least(low: int) -> Callable:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _accepted_by(parse: Callable, value) -> bool:
    try:
        parse(value)
        return True
    except ValueError:
        return False


def _finite(low: float, strict: bool) -> Callable:
    return lambda v: isinstance(v, (int, float)) and math.isfinite(v) and (v > low if strict else v >= low)


# (field, test, what the value must be, an example of a good value)
RULES = [
    ("budget", _int_at_least(1), "a positive number of optimizer steps", "budget=8"),
    ("k", _int_at_least(1), "a positive number of candidates", "k=200"),
    ("llambda", _finite(0, True), "a finite noise variance > 0", "llambda=0.2"),
    ("alpha", lambda v: v is None or _finite(0, True)(v), "null (fixed budget) or finite and > 0", "alpha=0.5"),
    ("queries_per_domain", _int_at_least(1), "a positive number of queries", "queries_per_domain=10"),
    ("num_shards", _int_at_least(1), "a positive number of shards", "num_shards=1"),
    ("shard", _int_at_least(0), "a shard index >= 0", "shard=0"),
    ("worker", _int_at_least(0), "a worker index >= 0 (it only tells identical workers apart)", "worker=0"),
    ("data.max_length", _int_at_least(2), "at least 2 tokens per training sequence", "data.max_length=1024"),
    ("data.min_length", _int_at_least(1), "at least 1 token", "data.min_length=16"),
    ("data.max_doc_chars", _int_at_least(1), "a positive number of characters", "data.max_doc_chars=4000"),
    ("data.query_fraction", lambda v: _finite(0, True)(v) and v < 1, "a fraction strictly between 0 and 1",
     "data.query_fraction=0.1"),
    ("data.max_pool_per_domain", _int_at_least(1), "a positive number of sequences", "data.max_pool_per_domain=1000"),
    ("data.max_docs_per_domain", _int_at_least(1), "a positive number of documents", "data.max_docs_per_domain=1200"),
    ("data.max_docs_per_source", _int_at_least(1), "a positive number of documents", "data.max_docs_per_source=10"),
    ("data.ivf_nlist", _int_at_least(1), "a positive number of lists", "data.ivf_nlist=64"),
    ("data.ivf_nprobe", _int_at_least(1), "a positive number of probes", "data.ivf_nprobe=16"),
    ("data.hnsw_m", _int_at_least(2), "at least 2 links per node", "data.hnsw_m=32"),
    ("data.index", lambda v: bool(str(v).strip()), "flat, ivf, hnsw or a faiss index_factory string", "data.index=flat"),
    ("data.index_train_size", _int_at_least(1), "a positive number of rows", "data.index_train_size=100000"),
    ("data.index_rerank", _int_at_least(0), "0 (no rescoring) or a number of candidates >= k",
     "data.index_rerank=1000"),
    ("data.index_part_rows", _int_at_least(0), "0 (one index file) or a number of rows per index file",
     "data.index_part_rows=20000000"),
    ("data.unit_docs", _int_at_least(1), "a positive number of documents per build unit", "data.unit_docs=2000"),
    ("data.num_shards", _int_at_least(1), "a positive number of build shards", "data.num_shards=4"),
    ("data.shard", _int_at_least(0), "a build shard index >= 0", "data.shard=0"),
    ("engine.lr", _finite(0, True), "a finite learning rate > 0", "engine.lr=5e-5"),
    ("engine.eps", _finite(0, True), "a finite epsilon > 0", "engine.eps=1e-8"),
    ("engine.weight_decay", _finite(0, False), "finite and >= 0", "engine.weight_decay=0.0"),
    ("engine.max_grad_norm", lambda v: v is None or _finite(0, True)(v), "null (no clipping) or finite and > 0",
     "engine.max_grad_norm=1.0"),
    ("engine.refresh_interval", _int_at_least(1), "a positive interval (1 = no Gradient Reuse)",
     "engine.refresh_interval=2"),
    ("engine.batch_size", _int_at_least(1), "a positive number of sequences", "engine.batch_size=1"),
    ("engine.lora_r", _int_at_least(1), "a positive rank", "engine.lora_r=16"),
    ("engine.lora_alpha", _finite(0, True), "finite and > 0", "engine.lora_alpha=32"),
    ("engine.bucket", _int_at_least(1), "a positive number of tokens", "engine.bucket=128"),
    ("engine.cuda_graphs", lambda v: _accepted_by(graphs_wanted, v), "auto, true or false", "engine.cuda_graphs=auto"),
    ("engine.compile", lambda v: _accepted_by(compile_wanted, v), "auto, true or false", "engine.compile=auto"),
    ("eval.window", _int_at_least(1), "at least one token per scoring window", "eval.window=1024"),
    ("embedder.max_tokens", _int_at_least(1), "a positive number of tokens", "embedder.max_tokens=256"),
    ("embedder.batch_size", _int_at_least(1), "a positive batch size", "embedder.batch_size=64"),
    ("embedder.batch_tokens", lambda v: v is None or _int_at_least(1)(v), "null (auto) or a positive number of tokens",
     "embedder.batch_tokens=4096"),
    ("model.device", lambda v: bool(DEVICE.match(str(v))), "auto, cpu, cuda, cuda:N or mps", "model.device=auto"),
    ("embedder.device", lambda v: bool(DEVICE.match(str(v))), "auto, cpu, cuda, cuda:N or mps",
     "embedder.device=auto"),
    ("logger.mode", lambda v: v in ("offline", "online", "disabled"), "offline, online or disabled",
     "logger.mode=offline"),
]
TINY_RULES = [(f"model.{f}", _int_at_least(1), "a positive size", f"model.{f}=2")
              for f in ("n_layer", "n_embd", "n_head", "n_positions")]


def _unknown_keys(cfg: DictConfig) -> List[str]:
    """Keys the schema does not know: `+budgt=4` is a typo, not a setting. The selector group is free-form
    (its keys are the selector's constructor arguments, checked when it is built)."""
    problems = []
    known = {f.name for f in dataclasses.fields(Config)} | {"hydra"}
    places = [("", set(cfg.keys()), known)]
    places += [(f"{g}.", set(cfg[g].keys()), {f.name for f in dataclasses.fields(s)})
               for g, s in GROUP_SCHEMAS.items() if isinstance(cfg.get(g), DictConfig)]
    for prefix, keys, allowed in places:
        for key in sorted(keys - allowed):
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f"did you mean {prefix}{close[0]}=...?" if close else f"see conf/config.yaml for the {prefix or 'top-level '}keys"
            problems.append(f"+{prefix}{key}: not a setting of this harness; {hint}")
    return problems


def _path_problems(cfg: DictConfig) -> List[str]:
    problems = []
    if cfg.data.kind == CorpusKind.jsonl:
        problems += corpus_path_problems(cfg.data.path)
    for group, kind in (("model", ModelKind.hub), ("embedder", EmbedderKind.hub)):
        node = cfg[group]
        source = str(node.get("hub_id", ""))
        if node.kind == kind and source.startswith(("/", "./", "../", "~")) and not Path(source).expanduser().is_dir():
            problems.append(f"{group}.hub_id={source}: no such directory; give a local model directory or a hub id")
    return problems


def _combination_problems(cfg: DictConfig) -> List[str]:
    problems = []
    budget, k = cfg.budget, cfg.k
    if isinstance(budget, int) and isinstance(k, int) and 1 <= k < budget:
        problems.append(f"k={k} < budget={budget}: the selector needs at least n candidates; raise k")
    rerank = cfg.data.index_rerank
    if isinstance(rerank, int) and isinstance(k, int) and 0 < rerank < k:
        problems.append(f"data.index_rerank={rerank} < k={k}: rescoring fewer candidates than are retrieved drops "
                        f"some; use 0 or at least {k}")
    shard, shards = cfg.shard, cfg.num_shards
    if isinstance(shard, int) and isinstance(shards, int) and shards >= 1 and shard >= shards:
        problems.append(f"shard={shard}: must lie in [0, num_shards={shards}); lower shard or raise num_shards")
    shard, shards = cfg.data.shard, cfg.data.num_shards
    if isinstance(shard, int) and isinstance(shards, int) and shards >= 1 and shard >= shards:
        problems.append(f"data.shard={shard}: must lie in [0, data.num_shards={shards})")
    lo, hi = cfg.data.min_length, cfg.data.max_length
    if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
        problems.append(f"data.min_length={lo} > data.max_length={hi}: no sequence could be kept; lower min_length")
    if cfg.eval.protocol == Protocol.rolling and not cfg.eval.prefix:
        problems.append("eval.prefix=false applies to eval=first_window only: rolling scores every token")
    if cfg.eval.protocol == Protocol.rolling and cfg.eval.bytes != ByteCount.document:
        problems.append("eval.bytes=scored applies to eval=first_window only: rolling scores the whole document")
    if cfg.model.kind == ModelKind.tiny and isinstance(cfg.model.n_head, int) and cfg.model.n_head >= 1 \
            and isinstance(cfg.model.n_embd, int) and cfg.model.n_embd % cfg.model.n_head:
        problems.append(f"model.n_embd={cfg.model.n_embd} is not a multiple of model.n_head={cfg.model.n_head}")
    marks, budget_ok = list(cfg.checkpoints), isinstance(budget, int) and budget >= 1
    bad = [m for m in marks if not (isinstance(m, int) and budget_ok and 1 <= m < budget)]
    if bad:
        problems.append(f"checkpoints={marks}: each must be a step count in [1, budget={budget}); drop {bad}")
    if marks and cfg.alpha is not None:
        problems.append("checkpoints and alpha cannot be combined: an adaptive run has no fixed steps to score at")
    unknown = [d for d in cfg.data.domains if d not in DOMAINS]
    if cfg.data.kind == CorpusKind.offline_mix and unknown:
        problems.append(f"data.domains names unknown domain(s) {unknown}; choose from {sorted(DOMAINS)}")
    if not str(cfg.tag) or "/" in str(cfg.tag):
        problems.append(f"tag={cfg.tag!r}: a non-empty name without '/' (it names the output directory)")
    return problems


def _value(cfg: DictConfig, dotted: str):
    return OmegaConf.select(cfg, dotted, throw_on_missing=False)


def config_problems(cfg: DictConfig) -> List[str]:
    """Every problem of the resolved config, one line each naming the field, the value and the fix."""
    problems = _unknown_keys(cfg)
    rules = RULES + (TINY_RULES if cfg.model.kind == ModelKind.tiny else [])
    for field, ok, need, example in rules:
        value = _value(cfg, field)
        if not ok(value):
            problems.append(f"{field}={value}: must be {need} (e.g. {example})")
    return problems + _combination_problems(cfg) + _path_problems(cfg)


def check_config(cfg: DictConfig) -> None:
    problems = config_problems(cfg)
    if problems:
        raise ConfigError(problems)


def check_writable(directory: Path, field: str, also: Optional[Path] = None) -> None:
    """The output directory (or, before it exists, the folder it will be made in) and, where given, a
    directory below it that will be written must accept a file: probed, not guessed from mode bits."""
    for d in (Path(directory), also):
        if d is None or (d is also and not d.exists()):
            continue
        target = next((p for p in (d, *d.parents) if p.exists()), d)
        try:
            with tempfile.TemporaryFile(dir=target):
                pass
        except OSError as e:
            raise ConfigError([f"{field}: cannot write in {target} ({e.strerror}); fix its permissions or choose "
                               f"another directory"]) from None
