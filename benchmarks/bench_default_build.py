"""How to build the default data space faster, chosen by measurement; ratios against fp32/256 in this run.

    python -m benchmarks.bench_default_build [--pool 3000] [--queries-per-domain 6]

On a seeded sample of the default pool's sequences, per embedder setting (max tokens 256 or 128; fp32, the model in bf16, or
int8 dynamic quantisation of the Linear layers): seconds per 1,000 sequences, and how much each query document's
top-200 candidates (over the sample) overlap the fp32/256 ones. Embedding is the build's dominant stage.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from hullft.compose import compose_config
from hullft.data import load_data_space
from hullft.embedder import Embedder
from hullft.models import load_model
from hullft.per_query import embed_query

SETTINGS = [("fp32", 256), ("fp32", 128), ("bf16", 256), ("bf16", 128), ("int8", 256), ("int8", 128)]


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=int, default=3000)
    ap.add_argument("--queries-per-domain", type=int, default=6)
    ap.add_argument("--k", type=int, default=200)
    args = ap.parse_args(argv)
    cfg = compose_config([])
    loaded = load_model(cfg.model)
    space = load_data_space(cfg.data, loaded.tokenizer, loaded.fingerprint, Embedder(cfg.embedder))
    rows = np.sort(np.random.default_rng(0).choice(len(space.pool), size=min(args.pool, len(space.pool)),
                                                   replace=False))
    texts = loaded.tokenizer.batch_decode([space.pool.tokens(r) for r in rows])
    queries = space.with_text(space.queries.groupby("domain").head(args.queries_per_domain))
    results, baseline = [], None
    for precision, tokens in SETTINGS:
        embedder = Embedder(compose_config([f"embedder.max_tokens={tokens}",
                                            f"embedder.precision={precision}"]).embedder)
        embedder.embed(texts[:64])  # warm-up
        start = time.perf_counter()
        pool = embedder.embed(texts)
        seconds = time.perf_counter() - start
        q = np.stack([embed_query(t, loaded.tokenizer, embedder, cfg.data.max_length) for t in queries.text])
        top = np.argsort(-(q @ pool.T), axis=1, kind="stable")[:, :args.k]
        if baseline is None:
            baseline = (top, seconds)
        overlap = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(top, baseline[0])])
        results.append({"precision": precision, "max_tokens": tokens, "s_per_1000": 1000 * seconds / len(texts),
                        "speedup": baseline[1] / seconds, "top200_overlap": overlap})
    df = pd.DataFrame(results)
    print(f"{len(texts)} pool sequences of the default data space, {len(queries)} query documents")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return df


if __name__ == "__main__":
    main()
