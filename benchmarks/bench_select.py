"""Selection speed: every selector on the same random unit vectors, ratios measured in this one run.

    python -m benchmarks.bench_select [--reps 5]

For K in {200, 1000}, n in {10, 20, 50}, d in {384, 1024}: median seconds per query of nn, hullft,
sift (activeft), sift_exact, mmr and kcenter over the same K candidates, plus the faiss top-K and
top-n searches over a 10k-row flat index that all of them share. Prints the target ratios:
hullft / sift, sift_exact / sift (with a check that the picks are identical), and
(faiss top-K + hullft) / (faiss top-n for nn).

Then selection as the runner times it (`timed_select`): alone (the same call repeated), in the runner's order
(retrieval for every query, its candidates' gather included, then every selection) and, for comparison,
interleaved with training steps (each selection right after a torch training step and its query's search).
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import time

import numpy as np
import pandas as pd
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import faiss
from baselines.kcenter import KCenter
from baselines.mmr import MMR
from baselines.nn import NearestNeighbours
from baselines.sift import SIFT
from baselines.sift_exact import SiftExact
from hullft.selection.timing import timed_select
from hullft.selection.hullft import HullFT

SELECTORS = {"nn": NearestNeighbours(), "hullft": HullFT(), "sift": SIFT(0.2), "sift_exact": SiftExact(0.2),
             "mmr": MMR(), "kcenter": KCenter()}


def unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)


def median_seconds(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--pool", type=int, default=10_000)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    for d in (384, 1024):
        pool = unit(rng.normal(size=(args.pool, d)))
        index = faiss.IndexFlatIP(d)
        index.add(pool)
        for K, n in itertools.product((200, 1000), (10, 20, 50)):
            query = unit(pool[:8].mean(0) + 0.5 * rng.normal(size=d))
            _, top = index.search(query[None], K)
            candidates = pool[top[0]]
            row = {"d": d, "K": K, "n": n,
                   "faiss_topK": median_seconds(lambda: index.search(query[None], K), args.reps),
                   "faiss_topn": median_seconds(lambda: index.search(query[None], n), args.reps)}
            for name, selector in SELECTORS.items():
                selector.select(query, candidates, n)  # warm-up
                row[name] = median_seconds(lambda: selector.select(query, candidates, n), args.reps)
            a, b = SELECTORS["sift"].select(query, candidates, n), SELECTORS["sift_exact"].select(query, candidates, n)
            row["same_picks"] = a.picks.tolist() == b.picks.tolist() and a.indices.tolist() == b.indices.tolist()
            rows.append(row)
    df = pd.DataFrame(rows)
    df["hullft/sift"] = df.hullft / df.sift
    df["sift_exact/sift"] = df.sift_exact / df.sift
    df["(topK+hullft)/(topn+nn)"] = (df.faiss_topK + df.hullft) / (df.faiss_topn + df.nn)
    df["(topK+hullft)/topn"] = (df.faiss_topK + df.hullft) / df.faiss_topn
    ms = df.copy()
    for col in ["faiss_topK", "faiss_topn", *SELECTORS]:
        ms[col] = ms[col] * 1e3
    print("median milliseconds per query, and ratios measured in this run")
    print(ms.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    key = df[(df.K == 200) & (df.n == 50) & (df.d == 384)].iloc[0]
    print(f"\nK=200 n=50 d=384: hullft/sift = {key['hullft/sift']:.4f} (target <= 0.01); "
          f"sift_exact/sift = {key['sift_exact/sift']:.4f} (target <= 0.1), identical picks everywhere: "
          f"{bool(df.same_picks.all())}; (faiss top-K + hullft)/(faiss top-n + nn) = "
          f"{key['(topK+hullft)/(topn+nn)']:.2f} (target <= 3)")
    return df


def pipeline(reps: int, pool_size: int, K: int = 200, n: int = 50, d: int = 384) -> pd.DataFrame:
    """Median t_select per selector: alone, in the runner's order, and interleaved with training steps."""
    rng = np.random.default_rng(1)
    pool = unit(rng.normal(size=(pool_size, d)))
    index = faiss.IndexFlatIP(d)
    index.add(pool)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=8192, n_embd=512, n_layer=4, n_head=8))
    ids = torch.randint(0, 8192, (1, 256))

    def training_step():
        model(input_ids=ids, labels=ids).loss.backward()

    def runner_order(select):
        """As the runner: a training step (the previous block's), then the retrieval phase for every query (a
        torch forward as the query embedding, a faiss search, the candidates' gather), then every selection."""
        training_step()
        retrieved = []
        for _ in range(reps):
            with torch.no_grad():
                model(input_ids=ids)
            query = unit(pool[rng.integers(pool_size, size=8)].mean(0))
            retrieved.append((query, pool[index.search(query[None], K)[1][0]]))
        return statistics.median(select(query, candidates) for query, candidates in retrieved)

    def interleaved(select):
        """Each selection right after a training step and its query's search (the runner's order until 2026-11)."""
        times = []
        for _ in range(reps):
            training_step()
            query = unit(pool[rng.integers(pool_size, size=8)].mean(0))
            _, top = index.search(query[None], K)
            times.append(select(query, pool[top[0]]))
        return statistics.median(times)

    rows = []
    for name in ("nn", "hullft", "sift_exact", "mmr", "kcenter", "sift"):
        selector = SELECTORS[name]
        query = unit(pool[:8].mean(0))
        candidates = pool[index.search(query[None], K)[1][0]]
        timed_select(selector, query, candidates, n)  # warm-up
        alone = statistics.median(timed_select(selector, query, candidates, n)[1] for _ in range(reps))
        runner = runner_order(lambda q, c: timed_select(selector, q, c, n)[1])
        mixed = interleaved(lambda q, c: timed_select(selector, q, c, n)[1])
        rows.append({"selector": name, "alone_ms": alone * 1e3, "runner_ms": runner * 1e3,
                     "runner/alone": runner / alone, "interleaved_ms": mixed * 1e3,
                     "interleaved/alone": mixed / alone})
    df = pd.DataFrame(rows)
    print(f"\nt_select as the runner times it (timed_select, K={K}, n={n}, d={d}; median of {reps}): alone (the same "
          f"call repeated); in the runner's order (all retrievals, then all selections, before any training step); "
          f"and interleaved (each right after a torch training step)")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    worst = df[df.selector.isin(["nn", "hullft", "sift_exact"])]["runner/alone"].max()
    print(f"worst runner/alone over hullft, sift_exact, nn: {worst:.2f} (target <= 1.5)")
    return df


if __name__ == "__main__":
    main()
    pipeline(reps=21, pool_size=10_000)
