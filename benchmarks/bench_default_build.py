"""How to build the default data space faster, chosen by measurement; ratios against the previous default in this run.

    python -m benchmarks.bench_default_build [--pool 1500] [--repeats 3] [--queries-per-domain 6] [--more]

On a seeded sample of the default pool's sequences, per embedder setting: seconds per 1,000 sequences (median of
the repeats, settings interleaved so that drifts of a shared machine hit all alike), the speed-up over the
previous default, and how much each query document's top-200 candidates (over the sample) overlap the fp32 ones.
Embedding is the build's dominant stage. The settings:

    batching  tokens: sorted by token count, <= 64 sequences and <= 4,096 padded tokens a batch (the default now)
              chars: sorted by character count, 32 a batch (the default before 2026-12-01)
    memory    kept: glibc keeps freed activations for reuse (hullft.memory.keep_freed_memory, the default now)
              returned: glibc's defaults, which map large activations afresh for every batch
    kernels   fused: oneDNN's fused dense layers on bf16 (hullft/fused_encoder.py, the default now)
              stock: torch's linear, GELU and add (embedder.fused=false; the default before the second
              session of 2026-12-01, the reference for speed-ups)

glibc's setting cannot be undone inside a process, so the `returned` settings run first, all their repeats.
--more adds the settings that cut work (128 tokens, int8), whose candidates differ.
"""
from __future__ import annotations

import argparse
import time
from typing import Dict, List

import numpy as np
import pandas as pd

from hullft import embedder as embedder_module
from hullft.compose import compose_config
from hullft.data import load_data_space
from hullft.embedder import Embedder
from hullft.models import load_tokenizer
from hullft.per_query import embed_query

# (precision, max_tokens, batching, memory, kernels)
RETURNED = [("bf16", 256, "chars", "returned", "stock"), ("bf16", 256, "tokens", "returned", "stock")]
KEPT = [("bf16", 256, "chars", "kept", "stock"), ("bf16", 256, "tokens", "kept", "stock"),
        ("bf16", 256, "tokens", "kept", "fused"), ("fp32", 256, "tokens", "kept", "stock")]
MORE = [("bf16", 128, "tokens", "kept", "fused"), ("int8", 256, "tokens", "kept", "stock")]
PREVIOUS = ("bf16", 256, "tokens", "kept", "stock")  # the reference for speed-ups
REFERENCE = ("fp32", 256, "tokens", "kept", "stock")  # "the current fp32 candidates"


def embed_by_characters(embedder: Embedder, texts: List[str], batch: int = 32) -> np.ndarray:
    """The previous default's batching: texts sorted by character count, a fixed number per batch."""
    out = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    ids = embedder.tokenizer(list(texts), truncation=True, max_length=embedder.cfg.max_tokens).input_ids
    order = np.argsort([len(t) for t in texts], kind="stable")
    for start in range(0, len(texts), batch):
        rows = order[start:start + batch]
        out[rows] = embedder._batch([ids[i] for i in rows])
    return out


def embed_with(embedder: Embedder, batching: str, texts: List[str]) -> np.ndarray:
    return embedder.embed(texts) if batching == "tokens" else embed_by_characters(embedder, texts)


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=int, default=1500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--queries-per-domain", type=int, default=6)
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument("--more", action="store_true")
    args = ap.parse_args(argv)
    cfg = compose_config([])
    tokenizer, fingerprint = load_tokenizer(cfg.model)
    keep_freed_memory = embedder_module.keep_freed_memory
    embedder_module.keep_freed_memory = lambda: None  # the `returned` settings first
    space = load_data_space(cfg.data, tokenizer, fingerprint, Embedder(cfg.embedder))
    rows = np.sort(np.random.default_rng(0).choice(len(space.pool), size=min(args.pool, len(space.pool)),
                                                   replace=False))
    texts = tokenizer.batch_decode([space.pool.tokens(r) for r in rows])
    queries = space.with_text(space.queries.groupby("domain").head(args.queries_per_domain))
    seconds: Dict[tuple, list] = {}
    tops: Dict[tuple, np.ndarray] = {}
    for phase in (RETURNED, KEPT + (MORE if args.more else [])):
        if phase is not RETURNED:
            keep_freed_memory()
        embedders = {s: Embedder(compose_config([f"embedder.precision={s[0]}", f"embedder.max_tokens={s[1]}",
                                                 f"embedder.fused={s[4] == 'fused'}"]).embedder) for s in phase}
        for setting, embedder in embedders.items():
            embed_with(embedder, setting[2], texts[:64])  # warm-up
        pools: Dict[tuple, np.ndarray] = {}
        for _ in range(args.repeats):
            for setting, embedder in embedders.items():
                start = time.perf_counter()
                pools[setting] = embed_with(embedder, setting[2], texts)
                seconds.setdefault(setting, []).append(time.perf_counter() - start)
        for setting, embedder in embedders.items():
            q = np.stack([embed_query(t, tokenizer, embedder, cfg.data.max_length) for t in queries.text])
            tops[setting] = np.argsort(-(q @ pools[setting].T), axis=1, kind="stable")[:, :args.k]
    base = float(np.median(seconds[PREVIOUS]))
    results = []
    for setting, times in seconds.items():
        overlap = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(tops[setting], tops[REFERENCE])])
        results.append({"precision": setting[0], "max_tokens": setting[1], "batching": setting[2],
                        "memory": setting[3], "kernels": setting[4],
                        "s_per_1000": 1000 * float(np.median(times)) / len(texts),
                        "spread": f"{1000 * min(times) / len(texts):.1f}-{1000 * max(times) / len(texts):.1f}",
                        "speedup": base / float(np.median(times)), "top200_overlap_fp32": overlap})
    df = pd.DataFrame(results)
    print(f"{len(texts)} pool sequences of the default data space, {len(queries)} query documents, "
          f"median of {args.repeats}; speed-up over {'/'.join(map(str, PREVIOUS))}")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return df


if __name__ == "__main__":
    main()
