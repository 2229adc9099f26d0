"""Engine speed on the embedded model at 256 tokens; every ratio is against a baseline timed in this run.

    python -m benchmarks.bench_engine [--tokens 256] [--rounds 3]

- the step before 2026-12-07 (the tied embedding's gradient dense) / today's   target >= 1.3 (issue #48)
- BPB of a held-out text after 8 steps on 8 other texts, before and today   target |difference| <= 0.02 points
- engine step / bare torch loop step (same model, sequence and optimizer)      target <= 1.10
- reset / step                                                                 target <= 0.02
- Gradient Reuse speedup vs ideal n / sum ceil(J/r) on a multiset with repeats target >= 0.9 x ideal
- achieved GFLOP/s of a step (6 x params x tokens), old and new, as a fraction of the matmul peak measured here
  in the step's precision (and of the bf16 peak where the CPU has native bf16)
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
from hullft.hardware import cpu_has_native_bf16, cpu_name
from hullft.models import load_model, synchronize
from hullft.scoring.bpb import score_text


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


def matmul_gflops(size: int = 2048, reps: int = 5, dtype=torch.float32) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(reps))
    return 2 * size**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bpb_after_steps(engine: FinetuneEngine, loaded, cfg, sparse: bool, tokens: int) -> float:
    """BPB% (of the base model's) of one stdlib text after one step on each of 8 others (the engine reset after)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    names = ["argparse.py", "ast.py", "csv.py", "difflib.py", "enum.py", "glob.py", "gzip.py", "heapq.py"]
    seqs = [loaded.tokenizer((stdlib / n).read_text(), add_special_tokens=False).input_ids[:tokens] for n in names]
    held_out = (stdlib / "textwrap.py").read_text()[:4000]
    base = score_text(loaded, held_out, cfg.eval).bpb
    engine.steps.sparse_embedding_grad = sparse
    engine.finetune(seqs, [1] * len(seqs))
    tuned = score_text(loaded, held_out, cfg.eval).bpb
    engine.reset()
    return 100 * tuned / base


def embedded_step(tokens: int):
    """The benchmarks' step: the default config without Gradient Reuse, the embedded model, and `tokens` tokens of
    the stdlib's argparse.py as the training sequence; (cfg, loaded, seq)."""
    cfg = compose_config(["engine.refresh_interval=1"])
    loaded = load_model(cfg.model)
    text = Path(sysconfig.get_paths()["stdlib"], "argparse.py").read_text()
    return cfg, loaded, loaded.tokenizer(text, add_special_tokens=False).input_ids[:tokens]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args(argv)
    cfg, loaded, seq = embedded_step(args.tokens)
    ids = torch.tensor([seq], device=loaded.device)
    engine = FinetuneEngine(loaded, cfg.engine)
    reuse = FinetuneEngine(loaded, compose_config(["engine.refresh_interval=2"]).engine)  # same model, r = 2 (eager)
    counts = [4, 2, 2]  # n = 8; with r = 2: 2 + 1 + 1 = 4 passes
    ideal = sum(counts) / sum(math.ceil(j / 2) for j in counts)
    seqs = [seq, seq[::-1], seq[1:] + seq[:1]]

    bare, eng, old, resets, no_reuse, with_reuse = [], [], [], [], [], []
    bare_steps(loaded.model, ids, 1)  # warm-up
    engine.reset()
    sparse = engine.sparse_embedding_grad
    for _ in range(args.rounds):  # interleaved so drift on a noisy machine hits all alike
        bare.append(bare_steps(loaded.model, ids, args.steps))
        engine.reset()
        eng.append(engine.finetune([seq], [args.steps]).seconds / args.steps)
        engine.reset()
        engine.steps.sparse_embedding_grad = False  # the step as it was before 2026-12-07
        old.append(engine.finetune([seq], [args.steps]).seconds / args.steps)
        engine.steps.sparse_embedding_grad = sparse
        resets.append(_timed(engine.reset))
        no_reuse.append(engine.finetune(seqs, counts).seconds)
        engine.reset()
        with_reuse.append(reuse.finetune(seqs, counts).seconds)
        engine.reset()
    bpb_before = bpb_after_steps(engine, loaded, cfg, False, args.tokens)
    bpb_today = bpb_after_steps(engine, loaded, cfg, sparse, args.tokens)
    engine.steps.sparse_embedding_grad = sparse
    step, base, reset = statistics.median(eng), statistics.median(bare), statistics.median(resets)
    before = statistics.median(old)
    speedup = statistics.median(no_reuse) / statistics.median(with_reuse)
    n_params = sum(p.numel() for p in loaded.model.parameters())
    flops = 6 * n_params * args.tokens
    bf16 = loaded.dtype.value == "bf16"
    peak = matmul_gflops(dtype=torch.bfloat16 if bf16 else torch.float32)
    print(f"model {loaded.name} ({n_params / 1e6:.0f}M params), {args.tokens} tokens, {loaded.dtype.value}, "
          f"device {loaded.device}, {cpu_name()}, {torch.get_num_threads()} threads; rounds {eng} s (today), "
          f"{old} s (before)")
    print(f"step before 2026-12-07   {before:8.3f} s   (the tied embedding's gradient dense)")
    print(f"engine step              {step:8.3f} s   before/today = {before / step:.3f}   (target >= 1.3; "
          f"sparse embedding gradient: {sparse})")
    print(f"BPB% after 8 steps       {bpb_today:8.4f} today, {bpb_before:.4f} before: difference "
          f"{bpb_today - bpb_before:+.5f} points (target within 0.02)")
    print(f"bare torch step          {base:8.3f} s")
    print(f"engine step              {step:8.3f} s   engine/bare = {step / base:.3f}   (target <= 1.10)")
    print(f"reset                    {reset * 1e3:8.1f} ms  reset/step  = {reset / step:.4f}  (target <= 0.02)")
    print(f"Gradient Reuse r=2 on counts {counts}: speedup {speedup:.2f}x, ideal {ideal:.2f}x, "
          f"fraction of ideal = {speedup / ideal:.3f} (target >= 0.9)")
    for label, seconds in (("before", before), ("today", step)):
        achieved = flops / seconds / 1e9
        print(f"step throughput ({label:6s}) {achieved:6.1f} GFLOP/s = {achieved / peak:.2f} of this CPU's "
              f"{loaded.dtype.value} matmul peak ({peak:.1f} GFLOP/s)")
    if not bf16:  # the step runs fp32 here; the bf16 peak says what a bf16 step could reach on this CPU
        bf16_peak = matmul_gflops(size=1024, reps=2, dtype=torch.bfloat16)
        print(f"bf16 matmul peak here {bf16_peak:.1f} GFLOP/s (native bf16: {cpu_has_native_bf16()}); the fp32 "
              f"step is {flops / step / 1e9 / bf16_peak:.2f} of it today, "
              f"{flops / before / 1e9 / bf16_peak:.2f} before")


if __name__ == "__main__":
    if torch.cuda.is_available():
        from benchmarks import bench_engine_cuda

        bench_engine_cuda.main([])
    else:
        main()
