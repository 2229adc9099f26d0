"""Where a training step's time goes: torch.profiler's self time per operator, in shares of the step.

    python -m benchmarks.profile_step [--tokens 256] [--threads 1,2] [--steps 3]

The engine's default step on the embedded model, and the step before 2026-12-07 (the tied embedding's gradient
dense), each profiled over --steps steps after a warm-up, at each thread count. Shares are of the profiled self
time; the groups:
  matmul              mm, addmm, bmm
  attention           scaled-dot-product attention, forward and backward
  optimizer           the fused Adam update, the gradient norm, zeroing the moments
  logits and loss     log-softmax, its backward, the negative log-likelihood
  embedding gradient  every op on a tensor of the vocabulary's embedding shape besides the matmuls
                      (the dense gradient's zero fill, scatter and sum)
  casts and copies    copy_, _to_copy, clone
  allocation          empty, fill_, zero_ (other than the embedding's)
  elementwise         the rest of aten's pointwise ops (add, mul, silu, ...)
Seconds come from benchmarks/bench_engine.py, not from here: the profiler's own allocations change which large
tensors the allocator can reuse, and on a VM whose page faults are dear (the 2-core EPYC of 2026-12-07: a fresh
113 MB tensor cost 0.7-0.9 s under the profiler, ~0.1 s without) that inflates every op on fresh memory.
"""
from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.bench_engine import embedded_step
from hullft.engine.finetune import FinetuneEngine
from hullft.hardware import cpu_name

GROUPS = [("matmul", ("aten::mm", "aten::addmm", "aten::bmm")),
          ("attention", ("scaled_dot_product", "flash_attention")),
          ("optimizer", ("fused_adam", "foreach", "vector_norm")),
          ("logits and loss", ("log_softmax", "nll_loss")),
          ("casts and copies", ("aten::copy_", "aten::_to_copy", "aten::clone")),
          ("allocation", ("aten::empty", "aten::fill_", "aten::zero_", "aten::zeros"))]


def group_of(name: str, shapes, embedding_shape) -> str:
    if any(name.startswith(p) or p in name for p in GROUPS[0][1]):
        return "matmul"
    if any(list(s) == list(embedding_shape) for s in shapes if s):
        return "embedding gradient"
    for group, patterns in GROUPS[1:]:
        if any(p in name for p in patterns):
            return group
    return "elementwise" if name.startswith("aten::") else "other"


def profile_steps(engine: FinetuneEngine, seq, steps: int, embedding_shape):
    engine.finetune([seq], [1])  # warm-up
    engine.reset()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        seconds = engine.finetune([seq], [steps]).seconds / steps
    engine.reset()
    shares = defaultdict(float)
    for event in prof.key_averages(group_by_input_shape=True):
        shares[group_of(event.key, event.input_shapes or [], embedding_shape)] += event.self_cpu_time_total
    total = sum(shares.values())
    return seconds, {k: v / total for k, v in shares.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args(argv)
    cfg, loaded, seq = embedded_step(args.tokens)
    engine = FinetuneEngine(loaded, cfg.engine)
    embedding_shape = tuple(loaded.model.get_input_embeddings().weight.shape)
    print(f"{loaded.name}, {loaded.dtype.value}, {args.tokens} tokens, {cpu_name()}; shares of the profiled "
          "self time (the profiler adds its own overhead to the seconds)")
    names = [g for g, _ in GROUPS[:1]] + ["attention", "optimizer", "logits and loss", "embedding gradient",
                                          "casts and copies", "allocation", "elementwise", "other"]
    print(f"{'threads':>7} {'step':>12} {'s/step':>7} " + " ".join(f"{n[:12]:>12}" for n in names))
    sparse = engine.sparse_embedding_grad
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for label, flag in (("before", False), ("today", sparse)):
            engine.steps.sparse_embedding_grad = flag
            seconds, shares = profile_steps(engine, seq, args.steps, embedding_shape)
            print(f"{threads:>7} {label:>12} {seconds:7.2f} "
                  + " ".join(f"{shares.get(n, 0) * 100:11.1f}%" for n in names))
        engine.steps.sparse_embedding_grad = sparse


if __name__ == "__main__":
    main()
