"""The engine's precisions and compiled steps against today's eager fp32, in interleaved rounds on one machine.

    python -m benchmarks.bench_precision [--rounds 5] [--step-tokens 256] [--score-tokens 1024]

Variants of a training step (forward, backward and fused Adam at `--step-tokens`, the engine's own steps) and of
a scoring forward (`--score-tokens`): eager fp32 (the engine before model.dtype=auto), eager bf16 autocast,
compiled fp32 and compiled bf16 (engine.compile=true). Each round times every variant once, so drift on a noisy
machine hits all alike; medians are printed as seconds, as speedups over eager fp32 and as fractions of the fp32
and bf16 matmul peaks measured in the same run (FLOPs as in hullft/flops.py: 2·P·T + attention per forward, a
step three forwards). Then which variant the default config picks on this machine (model.dtype=auto,
engine.compile=auto for a job of 1,000 steps) and its ratios against eager fp32 (targets: step >= 1.6x, scoring
>= 2x on a CPU with native bf16). Compile seconds (cold: this process's first compile) are printed too.

--fp32-only times eager and compiled fp32 alone: what compiling gains where bf16 is not native (where bf16 runs
many times slower and `auto` keeps fp32 and eager). To approximate an AVX2-only CPU on a newer one, cap every
library's instruction set in the environment: ATEN_CPU_CAPABILITY=avx2 (ATen and inductor's generated code),
ONEDNN_MAX_CPU_ISA=AVX2 and MKL_ENABLE_INSTRUCTIONS=AVX2 (the matmuls); caches and memory stay the newer CPU's.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sysconfig
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from hullft.compose import compose_config
from hullft.config import DType
from hullft.engine.finetune import FinetuneEngine
from hullft.flops import forward_flops
from hullft.hardware import cpu_name, native_bf16
from hullft.models import load_model, resolve_dtype
from hullft.scoring.bpb import eager_logits

VARIANTS = [("eager", DType.fp32), ("eager", DType.bf16), ("compiled", DType.fp32), ("compiled", DType.bf16)]


def matmul_peak(dtype: torch.dtype, size: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def scorer(loaded, compiled: bool):
    """Logits of one window, as the harness scores (eval mode, no grad); compiled: the same through torch.compile."""
    forward = eager_logits(loaded)
    if not compiled:
        return forward
    model = torch.compile(loaded.model, dynamic=True)

    def compiled_forward(inputs):
        ids = torch.tensor([inputs])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=loaded.dtype == DType.bf16):
            return model(input_ids=ids).logits[0]
    return compiled_forward


def timed_score(loaded, forward, ids) -> float:
    loaded.model.eval()
    with torch.no_grad():
        start = time.perf_counter()
        forward(ids)
        seconds = time.perf_counter() - start
    loaded.model.train()
    return seconds


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="a model config (conf/model/)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=2, help="training steps per timing")
    ap.add_argument("--step-tokens", type=int, default=256)
    ap.add_argument("--score-tokens", type=int, default=1024)
    ap.add_argument("--fp32-only", action="store_true", help="eager and compiled fp32 alone (see above)")
    args = ap.parse_args(argv)
    variants = [v for v in VARIANTS if v[1] == DType.fp32] if args.fp32_only else VARIANTS
    cfg = compose_config([f"model={args.model}", "engine.refresh_interval=1", "model.dtype=fp32"])
    loaded = load_model(cfg.model)
    text = Path(sysconfig.get_paths()["stdlib"], "argparse.py").read_text()
    tokens = loaded.tokenizer(text, add_special_tokens=False).input_ids
    step_seq, score_ids = tokens[:args.step_tokens], tokens[:args.score_tokens]

    engines, scorers, compile_seconds = {}, {}, {}
    for mode, dtype in variants:  # one model shared by every variant; each engine resets it to the same snapshot
        variant = dataclasses.replace(loaded, dtype=dtype)
        engine_cfg = OmegaConf.to_object(cfg.engine)
        engine_cfg.compile = "true" if mode == "compiled" else "false"
        engines[mode, dtype] = FinetuneEngine(variant, engine_cfg)
        start = time.perf_counter()
        engines[mode, dtype].finetune([step_seq], [1])  # warm-up; compiles the compiled ones
        engines[mode, dtype].reset()
        scorers[mode, dtype] = (variant, scorer(variant, mode == "compiled"))
        timed_score(variant, scorers[mode, dtype][1], score_ids)
        compile_seconds[mode, dtype] = time.perf_counter() - start

    steps = {v: [] for v in variants}
    scores = {v: [] for v in variants}
    for _ in range(args.rounds):
        for v in variants:
            steps[v].append(engines[v].finetune([step_seq], [args.steps]).seconds / args.steps)
            engines[v].reset()
            scores[v].append(timed_score(*scorers[v], score_ids))
    peaks = {DType.fp32: matmul_peak(torch.float32),
             DType.bf16: float("nan") if args.fp32_only else matmul_peak(torch.bfloat16)}

    model = loaded.model
    step_flops = 3 * forward_flops(model, len(step_seq), len(step_seq) ** 2)
    score_flops = forward_flops(model, len(score_ids), len(score_ids) ** 2)
    print(f"CPU {cpu_name()}, {torch.get_num_threads()} threads, native bf16: {native_bf16(torch.device('cpu'))}; "
          f"model {loaded.name}; matmul peak fp32 {peaks[DType.fp32]:.0f} GFLOP/s, bf16 {peaks[DType.bf16]:.0f}")
    print(f"{args.rounds} interleaved rounds, medians; ratios against eager fp32 timed in the same rounds")
    base_step, base_score = statistics.median(steps[VARIANTS[0]]), statistics.median(scores[VARIANTS[0]])
    print(f"{'variant':16} {'step s':>8} {'x':>6} {'of fp32':>8} {'of bf16':>8}   {'score s':>8} {'x':>6} "
          f"{'of fp32':>8} {'of bf16':>8}   {'warm-up s':>9}")
    for v in variants:
        step, score = statistics.median(steps[v]), statistics.median(scores[v])
        rates = step_flops / step / 1e9, score_flops / score / 1e9
        print(f"{v[0] + ' ' + v[1].value:16} {step:8.3f} {base_step / step:6.2f} {rates[0] / peaks[DType.fp32]:8.2f} "
              f"{rates[0] / peaks[DType.bf16]:8.2f}   {score:8.3f} {base_score / score:6.2f} "
              f"{rates[1] / peaks[DType.fp32]:8.2f} {rates[1] / peaks[DType.bf16]:8.2f}   {compile_seconds[v]:9.1f}")
    if args.fp32_only:
        return
    default = compose_config([f"model={args.model}", "model.dtype=auto"])
    dtype = resolve_dtype(default.model)
    engine = FinetuneEngine(dataclasses.replace(loaded, dtype=dtype), OmegaConf.to_object(default.engine),
                            expected_steps=1000)
    chosen = ("compiled" if engine.compiled else "eager", dtype)
    print(f"default config here: model.dtype=auto -> {dtype.value}, engine.compile=auto (1,000 steps) -> {chosen[0]} "
          f"(scoring runs eagerly): step {base_step / statistics.median(steps[chosen]):.2f}x (target >= 1.6), "
          f"scoring {base_score / statistics.median(scores[('eager', dtype)]):.2f}x (target >= 2.0) vs eager fp32")


if __name__ == "__main__":
    main()
