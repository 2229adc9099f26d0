"""python -m hullft.data plan|build|merge|stats [hydra overrides]

    plan    the documents and the plan of kept sequences only: run once before a sharded build, so the
            shards do not each make them
    build   the data space in this process (or, with data.num_shards=N, the units of data.shard=i only):
            python -m hullft.data build -m data.shard=0,1,2,3 data.num_shards=4 hydra/launcher=joblib
            (hydra/launcher=submitit_slurm on a cluster)
    merge   after every shard: token store, embeddings, index, manifest
    stats   per domain: documents, sources, bytes, query documents, pool sequences and tokens; and the
            index's recall@k against exact search on a sample of query documents
"""
import os
import sys
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from hullft.cache import REPO_ROOT, cache_root
from hullft.config import register_configs
from hullft.data import build
from hullft.data.index import recall_at_k
from hullft.data.space import load_data_space
from hullft.embedder import Embedder
from hullft.jobs import guarded, run_cli
from hullft.models import load_tokenizer
from hullft.validate import check_config

ACTIONS = ("plan", "build", "merge", "stats")
RECALL_QUERIES = 32


def act(action: str, cfg: DictConfig) -> None:
    check_config(cfg)
    tokenizer, fingerprint = load_tokenizer(cfg.model)  # a build needs the tokenizer, not the weights
    embedder = Embedder(cfg.embedder)
    data = cfg.data
    keys = build.Keys.of(data, fingerprint, embedder.fingerprint)
    if action == "plan":
        build.queries(data, keys)
        kept = build.plan(data, keys, tokenizer)
        units = len(build.unit_rows(build.documents_path(data, keys), data))
        print(f"plan {keys.units}: {len(kept)} pool sequences in {units} units of {data.unit_docs} documents; now "
              f"`python -m hullft.data build -m data.shard=... data.num_shards=N`, then `merge`")
        return
    if action == "build" and data.num_shards > 1:
        units = build.build_units(data, keys, tokenizer, embedder, data.shard, data.num_shards)
        print(f"shard {data.shard} of {data.num_shards}: units {units} built; run `python -m hullft.data merge` "
              f"once every shard is done")
        return
    if action == "merge":
        build.merge(data, keys, len(tokenizer), embedder.dim)
    space = load_data_space(data, tokenizer, fingerprint, embedder)
    print(f"data space {space.key}: {len(space.queries)} query documents, {len(space.pool)} pool sequences, "
          f"index {data.index}")
    if action == "stats":
        from hullft.per_query import embed_query

        print(space.stats().to_string())
        held = space.queries.memory_usage(deep=True).sum() + space.pool.table.memory_usage(deep=True).sum()
        print(f"held in RAM at query time besides the index: {held / 2**20:.1f} MiB "
              f"({held / max(1, int(space.pool.lengths.sum())):.2f} bytes per pool token; tokens and embeddings "
              f"are read from disk)")
        sample = space.with_text(space.queries.sample(min(RECALL_QUERIES, len(space.queries)), random_state=0))
        queries = np.stack([embed_query(t, tokenizer, embedder, data.max_length) for t in sample.text])
        k = min(cfg.k, len(space.pool))
        print(f"recall@{k} of data.index={data.index} against exact search, {len(queries)} query documents: "
              f"{recall_at_k(space.search, space.embeddings, queries, k):.4f}")


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ACTIONS:
        sys.exit(f"usage: python -m hullft.data {'|'.join(ACTIONS)} [hydra overrides]")
    action = sys.argv.pop(1)
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
