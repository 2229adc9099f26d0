"""Where the default data space's build time goes when the embedder runs in fp32 (CPUs without native bf16), and
the floor that implies: FLOPs embedded per second against this CPU's fp32 matmul peak, measured in the same run.

    python -m benchmarks.bench_fp32_floor [--sample 600]

The default space's stages before embedding (scan, keep, documents, chunk, plan) run from nothing into a
scratch cache, timed. Then a seeded sample of the kept pool sequences is embedded with
`embedder.precision=fp32`, and with the default precision for comparison, timed; its FLOPs are counted
(linear maps 2 * P * T with P the encoder's non-embedding weights, attention 4 * L * d * T^2, both directions),
and the whole pool's embedding time projected from the sample's seconds per FLOP. The peak is the best of
several fp32 matmuls of the encoder's own shapes (tokens x 384 @ 384 x 1536) on every core.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import pandas as pd
import torch


def matmul_peak_gflops(repeats: int = 20) -> float:
    a, b = torch.randn(4096, 384), torch.randn(384, 1536)
    c = torch.randn(4096, 1536)
    torch.mm(a, b, out=c)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(10):
            torch.mm(a, b, out=c)
        best = min(best, (time.perf_counter() - start) / 10)
    return 2 * 4096 * 384 * 1536 / best / 1e9


def encoder_gflop(model, lengths: np.ndarray) -> tuple:
    """(linear maps, attention) GFLOP of a BERT-style encoder over sequences of these lengths."""
    config = model.config
    embedding = sum(p.numel() for name, p in model.named_parameters() if "embeddings" in name)
    linear = sum(p.numel() for p in model.parameters()) - embedding
    lengths = lengths.astype(np.float64)
    return 2 * linear * lengths.sum() / 1e9, 4 * config.num_hidden_layers * config.hidden_size * (lengths ** 2).sum() / 1e9


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sample", type=int, default=600)
    args = ap.parse_args(argv)
    os.environ["HULLFT_CACHE"] = tempfile.mkdtemp(prefix="fp32-floor-")
    os.symlink(os.path.join(os.path.dirname(__file__), "..", ".cache", "models"),
               os.path.join(os.environ["HULLFT_CACHE"], "models"))
    from hullft.compose import compose_config
    from hullft.data import build, sequences, stages
    from hullft.embedder import Embedder
    from hullft.models import load_tokenizer

    cfg = compose_config([])
    tokenizer, fingerprint = load_tokenizer(cfg.model)
    fp32 = Embedder(compose_config(["embedder.precision=fp32"]).embedder)
    keys = build.Keys.of(cfg.data, fingerprint, fp32.fingerprint)
    seconds = {}
    for stage in ("scan", "keep", "documents", "chunk", "plan"):
        start = time.perf_counter()
        stages.run_stage(stage, cfg.data, keys, tokenizer, fp32)
        seconds[stage] = time.perf_counter() - start
    cuts = build.plan(cfg.data, keys, tokenizer)
    units = [pd.read_parquet(build.unit_sequences_path(keys, u)) for u in range(build.unit_count(cfg.data, keys))]
    kept = pd.concat([u[sequences.kept(u, cuts)] for u in units], ignore_index=True)
    texts = sequences.texts_of(tokenizer, [list(t) for t in kept.tokens])
    pick = np.random.default_rng(0).choice(len(texts), size=min(args.sample, len(texts)), replace=False)
    sample = [texts[i] for i in pick]
    lengths = lambda emb, ts: np.array([len(i) for i in emb.tokenizer(ts, truncation=True,  # noqa: E731
                                                                     max_length=emb.cfg.max_tokens).input_ids])
    all_linear, all_attention = encoder_gflop(fp32.model, lengths(fp32, texts))
    s_linear, s_attention = encoder_gflop(fp32.model, lengths(fp32, sample))
    peak = matmul_peak_gflops()
    rows = []
    for name, embedder in (("fp32", fp32), ("default (auto)", Embedder(cfg.embedder))):
        embedder.embed(sample[:32])  # warm-up
        start = time.perf_counter()
        embedder.embed(sample)
        took = time.perf_counter() - start
        rate = (s_linear + s_attention) / took
        rows.append({"precision": f"{name}: {embedder.precision.value}", "sample_s": took,
                     "GFLOP/s": rate, "of fp32 peak": rate / peak,
                     "pool embed s (projected)": took * (all_linear + all_attention) / (s_linear + s_attention)})
    print(f"{os.cpu_count()} cores; fp32 matmul peak (4096x384 @ 384x1536, best of 20): {peak:.0f} GFLOP/s")
    print(f"default pool: {len(texts)} sequences, {all_linear:.0f} GFLOP in linear maps + {all_attention:.0f} "
          f"in attention; sample of {len(sample)}")
    print("stages before embedding, s: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())
          + f" (total {sum(seconds.values()):.1f})")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    floor = (all_linear + all_attention) / peak
    print(f"floor: the pool's embedding at the fp32 matmul peak takes {floor:.0f} s; with the stages before it, "
          f"a data space in {floor + sum(seconds.values()):.0f} s at best on this CPU")


if __name__ == "__main__":
    main()
