"""python -m hullft.data build|scan|keep|documents|chunk|plan|embed|merge|stats|experts [hydra overrides]

    build      the whole data space, every stage in this process; with data.num_shards=N, every stage as
               its own sweep: a sharded stage's N jobs go through the configured Hydra launcher, e.g.
               python -m hullft.data build data.num_shards=4 hydra/launcher=joblib
               (hydra/launcher=submitit_slurm on a cluster, submitit_local to try it here)
    scan, keep, chunk, embed
               one sharded stage (stages.py), for data.shard of data.num_shards, e.g. in a sweep:
               python -m hullft.data embed -m 'data.shard=range(0,4)' data.num_shards=4 hydra/launcher=joblib
    documents, plan, merge
               one global stage, in this process
    stats      per domain: documents, sources, bytes, query documents, pool sequences and tokens; and the
               index's recall@k against exact search on a sample of query documents
    experts    method=merge's experts over the built space (hullft/experts/): the clusters, then expert i when
               i % data.num_shards == data.shard, e.g. over 4 jobs:
               python -m hullft.data experts -m method=merge data.num_shards=4 'data.shard=range(0,4)' \
                   hydra/launcher=submitit_slurm
"""
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from hullft.cache import REPO_ROOT, cache_root
from hullft.config import register_configs
from hullft.data import build, stages
from hullft.data.index import recall_at_k
from hullft.data.space import load_data_space
from hullft.embedder import Embedder
from hullft.errors import UserError
from hullft.jobs import guarded, run_cli
from hullft.models import load_tokenizer
from hullft.validate import check_config

ACTIONS = ("build", *stages.STAGES, "stats", "experts")
SHARDED = (*stages.SHARDED_STAGES, "experts")
RECALL_QUERIES = 32
OVERRIDES: List[str] = []  # the command line's overrides, which a sharded build passes on to each stage's sweep


def act(action: str, cfg: DictConfig) -> None:
    check_config(cfg)
    data = cfg.data
    sweep = HydraConfig.get().mode.name == "MULTIRUN"
    if sweep and action not in SHARDED:
        raise UserError(f"`python -m hullft.data {action}` runs in one process: drop -m (a sharded build is "
                        f"`build data.num_shards=N`, or the stages {', '.join(SHARDED)} with -m)")
    if action == "build" and data.num_shards > 1:
        return run_sharded(data.num_shards)
    if action == "experts":
        from hullft.experts.stage import settings_of

        settings_of(cfg)  # refused before anything is built
    tokenizer, fingerprint = load_tokenizer(cfg.model)  # a build needs the tokenizer, not the weights
    embedder = Embedder(cfg.embedder)
    keys = build.Keys.of(data, fingerprint, embedder.fingerprint)
    if action in stages.STAGES:
        print(stages.run_stage(action, data, keys, tokenizer, embedder))
        return
    space = load_data_space(data, tokenizer, fingerprint, embedder)
    print(f"data space {space.key}: {len(space.queries)} query documents, {len(space.pool)} pool sequences, "
          f"index {data.index}")
    if action == "experts":
        from hullft.experts.stage import build_experts

        print(build_experts(cfg, space, fingerprint, data.shard, data.num_shards))
    if action == "stats":
        from hullft.per_query import embed_query

        print(space.stats().to_string())
        held = space.queries.memory_usage(deep=True).sum()
        print(f"held in RAM at query time besides the index: {held / 2**20:.1f} MiB of query ids (the pool table, "
              f"tokens and embeddings are read from disk)")
        sample = space.with_text(space.queries.sample(min(RECALL_QUERIES, len(space.queries)), random_state=0))
        queries = np.stack([embed_query(t, tokenizer, embedder, data.max_length) for t in sample.text])
        k = min(cfg.k, len(space.pool))
        print(f"recall@{k} of data.index={data.index} against exact search, {len(queries)} query documents: "
              f"{recall_at_k(space.search, space.embeddings, queries, k):.4f}")


def run_sharded(shards: int) -> None:
    """Each stage in turn: a sharded one as a sweep of `shards` jobs through the launcher the command line
    chose, a global one as one process; the next starts when the last has finished."""
    passed = [a for a in OVERRIDES if not a.split("=")[0].lstrip("+~") in ("data.shard", "data.num_shards")]
    for stage in stages.STAGES:
        sharded = stage in stages.SHARDED_STAGES
        argv = [sys.executable, "-m", "hullft.data", stage, *(["-m"] if sharded else []), *passed,
                f"data.num_shards={shards if sharded else 1}", *([f"data.shard=range(0,{shards})"] if sharded else [])]
        print(f"stage {stage}: {' '.join(argv[3:])}", flush=True)
        if subprocess.run(argv).returncode:
            raise UserError(f"stage {stage} failed (above); run the same command again: finished work is kept")


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ACTIONS:
        sys.exit(f"usage: python -m hullft.data {'|'.join(ACTIONS)} [hydra overrides]")
    action = sys.argv.pop(1)
    OVERRIDES.extend(a for a in sys.argv[1:] if a not in ("-m", "--multirun"))
    os.environ.setdefault("HULLFT_ROOT", str(REPO_ROOT))
    register_configs()
    jobs = Path(cache_root()) / "jobs"  # Hydra's job folders for these builds stay out of outputs/
    sys.argv += [a for a, key in ((f"hydra.run.dir={jobs}/run", "hydra.run.dir"),
                                  (f"hydra.sweep.dir={jobs}/sweep", "hydra.sweep.dir"))
                 if not any(arg.startswith(key) for arg in sys.argv)]

    @hydra.main(config_path=str(REPO_ROOT / "conf"), config_name="config", version_base="1.3")
    def app(cfg: DictConfig):
        return guarded(lambda: act(action, cfg))

    run_cli(app)


if __name__ == "__main__":
    main()
