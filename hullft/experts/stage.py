"""The experts as a stage of the data space: cached under a key of everything that determines them, resumable
(an expert is a directory made whole or not at all; a stage stopped midway keeps the experts it finished), and
sharded (expert i is data.shard's when i % data.num_shards == data.shard), like the data build's stages:

    python -m hullft.data experts method=merge [method.experts.clusters=32]       # one process
    python -m hullft.data experts -m method=merge data.num_shards=4 'data.shard=range(4)' hydra/launcher=...

`<cache>/dataspace/experts-<key>/` holds `centroids.npy` (unit rows, expert i's at row i), `clusters.npy` (every
pool row's cluster), `clusters.json` (k-means' cost) and `<i>/` per expert in PEFT's layout with its `cost.json`.
A job with method=merge builds what is missing on first use (one process builds, others wait); experts are trained
one at a time, so memory is flat in their number.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import safetensors.torch
from omegaconf import OmegaConf

from hullft.cache import atomic_path
from hullft.data.files import cached, one_builder, root, save_json, save_npy
from hullft.embedder import every_core
from hullft.errors import UserError
from hullft.experts.clusters import cluster_pool
from hullft.experts.settings import ExpertSettings
from hullft.experts.train import expert_engine, expert_engine_config, sample_rows, train_expert
from hullft.models import load_model, resolve_dtype


@dataclass
class Experts:
    directory: Path
    centroids: np.ndarray          # (experts, d) unit rows
    adapters: List[Dict]           # per expert: PEFT's state dict (lora_A / lora_B tensors)
    scalings: List[float]          # per expert: lora_alpha / r from its adapter_config.json
    cost: Dict[str, float]         # one-time: seconds, cpu_seconds, flops of the clusters and every expert


def settings_of(cfg) -> ExpertSettings:
    experts = cfg.method.get("experts") if "method" in cfg else None
    if experts is None:
        raise UserError(f"method={cfg.method.get('_target_', '?').rsplit('.', 1)[-1].lower()} has no experts: "
                        f"the experts stage is method=merge's; add method=merge")
    return ExpertSettings(**OmegaConf.to_container(experts, resolve=True))


def experts_dir(cfg, space, fingerprint) -> Path:
    """Keyed by the engine settings the experts are trained with (not the job's own lr, LoRA or compile)."""
    settings = settings_of(cfg)
    engine = OmegaConf.to_container(expert_engine_config(cfg.engine, settings), resolve=True, enum_to_str=True)
    return root() / f"experts-{settings.key(space.key, fingerprint, resolve_dtype(cfg.model).value, engine)}"


def _clusters(directory: Path, settings: ExpertSettings, space) -> Tuple[np.ndarray, np.ndarray]:
    """The centroids and every row's cluster, each file cached with its checksum; k-means runs at most once,
    whichever of them is missing or damaged (it is seeded: the same arrays either way)."""
    made: List[np.ndarray] = []

    def k_means() -> List[np.ndarray]:
        if not made:
            cpu, start = time.process_time(), time.perf_counter()
            made.extend(cluster_pool(space.embeddings, settings.clusters, settings.seed))
            with atomic_path(directory / "clusters.json") as tmp:  # first: whoever finds the arrays finds their cost
                save_json({"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
                           "flops": 0.0}, tmp)
        return made

    centroids, _ = cached(directory / "centroids.npy", lambda: k_means()[0], save_npy, np.load)
    assignment, _ = cached(directory / "clusters.npy", lambda: k_means()[1], save_npy, np.load)
    return centroids, assignment


def finished(path: Path) -> bool:
    return (path / "cost.json").exists()


def build_experts(cfg, space, fingerprint, shard: int = 0, num_shards: int = 1) -> str:
    """This shard's missing experts (and the clusters, if missing); a line saying what was done. Training uses
    every core of the process's affinity, whatever a launcher's thread limit (hullft/embedder.py's every_core):
    an expert is the same bytes from any shard."""
    settings, directory = settings_of(cfg), experts_dir(cfg, space, fingerprint)
    directory.mkdir(parents=True, exist_ok=True)
    with one_builder(f".{directory.name}-clusters.lock", f"the clusters of {directory.name}"):
        centroids, assignment = _clusters(directory, settings, space)
    todo = [i for i in range(settings.clusters) if i % num_shards == shard and not finished(directory / str(i))]
    if not todo:
        return f"experts: none to train, {settings.clusters} in {directory}"
    loaded = load_model(cfg.model)  # a copy: LoRA wraps it, and the job's model stays as it is
    with every_core(loaded.device):
        engine = expert_engine(loaded, cfg.engine, settings)
        for i in todo:
            members = np.flatnonzero(assignment == i)
            if not len(members):  # a centroid no row is nearest to: its nearest rows
                members = np.asarray(space.search(centroids[i], settings.steps)[1])
            rows = sample_rows(members, settings, i)
            print(f"experts: training expert {i} of {settings.clusters} ({len(members)} sequences in its cluster)",
                  file=sys.stderr)
            train_expert(engine, [space.pool.tokens(int(r)) for r in rows], cfg.data.max_length, directory / str(i))
    return f"experts: {len(todo)} trained, {settings.clusters} in {directory}"


def read_expert(directory: Path, i: int) -> Tuple[Dict, float, Dict]:
    """Expert i's LoRA tensors (PEFT's names), its scaling (lora_alpha / r) and its cost."""
    path = directory / str(i)
    adapter = safetensors.torch.load_file(str(path / "adapter_model.safetensors"))
    config = json.loads((path / "adapter_config.json").read_text())
    return adapter, config["lora_alpha"] / config["r"], json.loads((path / "cost.json").read_text())


def load_experts(cfg, space, fingerprint) -> Experts:
    """Every expert, built first where missing; an expert whose files do not read is trained again, once."""
    settings, directory = settings_of(cfg), experts_dir(cfg, space, fingerprint)
    with one_builder(f".{directory.name}.lock", f"experts {directory.name}"):
        build_experts(cfg, space, fingerprint)
        centroids, _ = _clusters(directory, settings, space)
        loaded = []
        for i in range(settings.clusters):
            try:
                loaded.append(read_expert(directory, i))
            except (OSError, ValueError, KeyError, RuntimeError) as e:
                print(f"expert {i} in {directory} does not read ({type(e).__name__}); training it again",
                      file=sys.stderr)
                shutil.rmtree(directory / str(i), ignore_errors=True)
                build_experts(cfg, space, fingerprint)
                loaded.append(read_expert(directory, i))
    costs = [json.loads((directory / "clusters.json").read_text())] + [c for _, _, c in loaded]
    total = {k: float(sum(c.get(k, 0.0) for c in costs)) for k in ("seconds", "cpu_seconds", "flops")}
    return Experts(directory, centroids, [a for a, _, _ in loaded], [s for _, s, _ in loaded], total)
