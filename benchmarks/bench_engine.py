"""Engine speed on the embedded model at 256 tokens; every ratio is against a baseline timed in this run.

    python -m benchmarks.bench_engine [--tokens 256] [--rounds 3]

- engine step / bare torch loop step (same model, sequence and optimizer)      target <= 1.10
- reset / step                                                                 target <= 0.02
- Gradient Reuse speedup vs ideal n / sum ceil(J/r) on a multiset with repeats target >= 0.9 x ideal
- achieved GFLOP/s of a step (6 x params x tokens) as a fraction of the fp32 matmul peak measured here
On CUDA, the captured engine's figures follow (benchmarks/bench_engine_cuda.py).
"""
from __future__ import annotations

import argparse
import math
import statistics
import sysconfig
import time
from pathlib import Path

import torch

from hullft.compose import compose_config
from hullft.engine.finetune import FinetuneEngine
from hullft.models import load_model, synchronize


def bare_steps(model, ids, steps: int, bf16: bool = False) -> float:
    """The plain loop every TTFT implementation starts from; seconds per step."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=5e-5, eps=1e-8)
    synchronize(ids.device)
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=bf16):
            model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
    synchronize(ids.device)
    return (time.perf_counter() - start) / steps


def matmul_gflops(size: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(reps))
    return 2 * size**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args(argv)
    cfg = compose_config(["engine.refresh_interval=1"])
    loaded = load_model(cfg.model)
    text = Path(sysconfig.get_paths()["stdlib"], "argparse.py").read_text()
    seq = loaded.tokenizer(text, add_special_tokens=False).input_ids[:args.tokens]
    ids = torch.tensor([seq], device=loaded.device)
    engine = FinetuneEngine(loaded, cfg.engine)
    reuse = FinetuneEngine(loaded, compose_config(["engine.refresh_interval=2"]).engine)  # same model, r = 2 (eager)
    counts = [4, 2, 2]  # n = 8; with r = 2: 2 + 1 + 1 = 4 passes
    ideal = sum(counts) / sum(math.ceil(j / 2) for j in counts)
    seqs = [seq, seq[::-1], seq[1:] + seq[:1]]

    bare, eng, resets, no_reuse, with_reuse = [], [], [], [], []
    bare_steps(loaded.model, ids, 1)  # warm-up
    engine.reset()
    for _ in range(args.rounds):  # interleaved so drift on a noisy machine hits all alike
        bare.append(bare_steps(loaded.model, ids, args.steps))
        engine.reset()
        eng.append(engine.finetune([seq], [args.steps]).seconds / args.steps)
        resets.append(_timed(engine.reset))
        no_reuse.append(engine.finetune(seqs, counts).seconds)
        engine.reset()
        with_reuse.append(reuse.finetune(seqs, counts).seconds)
        engine.reset()
    step, base, reset = statistics.median(eng), statistics.median(bare), statistics.median(resets)
    speedup = statistics.median(no_reuse) / statistics.median(with_reuse)
    n_params = sum(p.numel() for p in loaded.model.parameters())
    achieved = 6 * n_params * args.tokens / step / 1e9
    peak = matmul_gflops()
    print(f"model {loaded.name} ({n_params / 1e6:.0f}M params), {args.tokens} tokens, device {loaded.device}, "
          f"{torch.get_num_threads()} threads")
    print(f"bare torch step          {base:8.3f} s")
    print(f"engine step              {step:8.3f} s   engine/bare = {step / base:.3f}   (target <= 1.10)")
    print(f"reset                    {reset * 1e3:8.1f} ms  reset/step  = {reset / step:.4f}  (target <= 0.02)")
    print(f"Gradient Reuse r=2 on counts {counts}: speedup {speedup:.2f}x, ideal {ideal:.2f}x, "
          f"fraction of ideal = {speedup / ideal:.3f} (target >= 0.9)")
    print(f"step throughput          {achieved:8.1f} GFLOP/s vs fp32 matmul peak {peak:.1f} GFLOP/s "
          f"= {achieved / peak:.2f} of peak")


if __name__ == "__main__":
    if torch.cuda.is_available():
        from benchmarks import bench_engine_cuda

        bench_engine_cuda.main([])
    else:
        main()
