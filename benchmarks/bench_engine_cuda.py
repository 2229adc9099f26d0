"""The captured engine against eager ones, on a GPU; every ratio against a baseline timed in this run.

    python -m benchmarks.bench_engine_cuda [--tokens 256 1024] [--steps 10] [--dtype bf16]

Models of SmolLM2-135M's and GPT-2-124M's shapes with random weights (timings do not depend on the
weights, and nothing is fetched). Per model and length, CUDA-synchronised seconds per step of:
- the bare eager loop (zero_grad, forward/backward, Adam),
- the engine eager (engine.cuda_graphs=false) and the engine captured (true),
- the launch-free floor: CUDA events around back-to-back replays of the step's two graphs,
plus the capture cost of the bucket and Gradient Reuse's speedup (r=2 against r=1) under capture.
`--compile` adds the alternative: the bare loop over `torch.compile(model, mode="reduce-overhead")` (fused
kernels in CUDA graphs), its compile seconds and its step, for the first model and length only.
Targets: captured <= 1.3 x floor at 1024 tokens; eager engine / captured >= 6 (SmolLM2, 256 and 1024)
and >= 4 (GPT-2 at 1024). `--device cpu --emulate` runs the same code on a CPU (a smoke test, no figures).
"""
from __future__ import annotations

import argparse
import math
import time

import pandas as pd
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

from benchmarks.bench_engine import bare_steps
from hullft.compose import compose_config
from hullft.config import DType
from hullft.engine.finetune import FinetuneEngine
from hullft.models import LoadedModel
from hullft.engine.train_steps import bucket_length

SHAPES = {
    "smollm2-135m": lambda: LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                                        num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                                        max_position_embeddings=8192, rope_theta=100000.0,
                                        tie_word_embeddings=True),
    "gpt2-124m": lambda: GPT2Config(),
    "tiny": lambda: GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=512, n_positions=1024),
}


def random_model(shape: str, device: torch.device, dtype: str) -> LoadedModel:
    torch.manual_seed(0)
    config = SHAPES[shape]()
    model = AutoModelForCausalLM.from_config(config).to(device).train()
    model.config.use_cache = False
    context = getattr(config, "max_position_embeddings", None) or config.n_positions
    return LoadedModel(model=model, tokenizer=None, name=shape, device=device, dtype=DType(dtype),
                       context_length=int(context), fingerprint=f"random-{shape}")


def floor_step(engine: FinetuneEngine, length: int, reps: int) -> float:
    """Device time of one captured step: the forward/backward and optimizer graphs replayed back to back."""
    graph, step_graph = engine.steps.graphs[length], engine.steps.step_graph
    if engine.device.type != "cuda":
        start = time.perf_counter()
        for _ in range(reps):
            graph.replay(), step_graph.replay()
        return (time.perf_counter() - start) / reps
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graph.replay(), step_graph.replay()
    begin.record()
    for _ in range(reps):
        graph.replay()
        step_graph.replay()
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / 1e3 / reps


def measure(shape: str, tokens: int, steps: int, dtype: str, device: torch.device, emulate: bool) -> dict:
    loaded = random_model(shape, device, dtype)
    g = torch.Generator().manual_seed(tokens)
    seq = torch.randint(0, loaded.model.config.vocab_size, (tokens,), generator=g).tolist()
    ids = torch.tensor([seq], device=device)
    bf16 = loaded.dtype == DType.bf16
    bare_steps(loaded.model, ids, 2, bf16)  # warm-up
    bare = bare_steps(loaded.model, ids, steps, bf16)
    for p in loaded.model.parameters():
        p.grad = None
    eager = FinetuneEngine(loaded, compose_config(["engine.cuda_graphs=false", "engine.refresh_interval=1"]).engine)
    eager.finetune([seq], [2])
    eager.reset()
    eager_step = eager.finetune([seq], [steps]).seconds / steps
    eager.reset()
    del eager
    captured = FinetuneEngine(loaded, compose_config(["engine.cuda_graphs=true", "engine.refresh_interval=1"]).engine,
                              emulate_graphs=emulate)
    capture = captured.steps.prepare([tokens])
    captured.finetune([seq], [2])
    captured.reset()
    captured_step = captured.finetune([seq], [steps]).seconds / steps
    captured.reset()
    floor = floor_step(captured, bucket_length(tokens, captured.cfg.bucket, loaded.context_length), steps)
    captured.reset()
    counts, seqs = [4, 2, 2], [seq, seq[::-1], seq[1:] + seq[:1]]
    no_reuse = captured.finetune(seqs, counts).seconds
    captured.reset()
    captured.cfg.refresh_interval = 2  # the same engine and graphs, Gradient Reuse on
    with_reuse = captured.finetune(seqs, counts).seconds
    captured.reset()
    ideal = sum(counts) / sum(math.ceil(j / 2) for j in counts)
    return {"model": shape, "tokens": tokens, "dtype": dtype, "bare_ms": bare * 1e3, "eager_ms": eager_step * 1e3,
            "captured_ms": captured_step * 1e3, "floor_ms": floor * 1e3,
            "eager/captured": eager_step / captured_step, "bare/captured": bare / captured_step,
            "captured/floor": captured_step / floor, "capture_s": capture,
            "reuse_of_ideal": no_reuse / with_reuse / ideal}


def measure_compile(shape: str, tokens: int, steps: int, dtype: str, device: torch.device) -> dict:
    """torch.compile's reduce-overhead mode on the bare loop: compile (first calls) and steady step seconds."""
    loaded = random_model(shape, device, dtype)
    ids = torch.randint(0, loaded.model.config.vocab_size, (1, tokens), device=device,
                        generator=torch.Generator(device).manual_seed(tokens))
    compiled = torch.compile(loaded.model, mode="reduce-overhead")
    start = time.perf_counter()
    bare_steps(compiled, ids, 3, loaded.dtype == DType.bf16)  # compiles forward and backward, records graphs
    compile_s = time.perf_counter() - start
    step = bare_steps(compiled, ids, steps, loaded.dtype == DType.bf16)
    return {"model": shape, "tokens": tokens, "compile_s": compile_s, "compiled_ms": step * 1e3}


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "gpt2-124m"], choices=sorted(SHAPES))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--emulate", action="store_true", help="CPU smoke test of this script: graphs emulated")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (reduce-overhead), one shape")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_engine_cuda: no CUDA device here (use --device cpu --emulate for a smoke test)")
    rows = [measure(m, t, args.steps, args.dtype, device, args.emulate) for m in args.models for t in args.tokens]
    df = pd.DataFrame(rows)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (emulated graphs)"
    print(f"{name}, torch {torch.__version__}; seconds per step synchronised, floor from CUDA events")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print("targets: captured/floor <= 1.3 at 1024 tokens; eager/captured >= 6 (smollm2-135m), >= 4 (gpt2-124m "
          "at 1024); capture per job <= 30 s; reuse_of_ideal >= 0.9")
    if args.compile:
        first = df.iloc[0]
        row = measure_compile(first["model"], int(first["tokens"]), args.steps, args.dtype, device)
        print(f"torch.compile(reduce-overhead), {row['model']} at {row['tokens']} tokens: compiled in "
              f"{row['compile_s']:.1f} s, {row['compiled_ms']:.2f} ms per step; manual capture "
              f"{first['captured_ms']:.2f} ms per step, captured in {first['capture_s']:.2f} s")
    return df


if __name__ == "__main__":
    main()
