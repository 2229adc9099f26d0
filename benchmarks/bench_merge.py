"""method=merge's cost per query against the query's scoring, and the experts stage's memory against its size.

    python -m benchmarks.bench_merge [--rounds 5] [--experts 8,32] [--stage 4,16]

1. Per query, on a SmolLM2-135M-shaped model (random weights: the timings do not depend on them) in the job's
   precision, with experts of rank 8 on every linear layer but the output (`method.experts.*` defaults), random:
   weighting the experts (ttmerge's rule, default beta and tau, the query near two centroids), adding their merged
   delta to the weights and restoring them bit for bit (the merge's own restore, then the engine's reset), each
   against scoring one query of ~1,000 tokens (the embedded default's query documents are 300-2,500 tokens) with
   the merge in, interleaved over rounds (medians); and the whole merged query against scoring the base model.
   Target: the three together <= 10% of the scoring. Beside the weights (the default) and in place (where captured
   graphs read the weights), fused (hullft/experts/fused_merge.py, where it runs) and with torch's addmm, alternated.
2. The experts stage (`python -m hullft.data experts method=merge`, 2 steps per expert: memory does not depend
   on the steps) in a process of its own for each number of experts, on the embedded default's data space (built
   first if missing): its peak RSS. Target: flat in the number of experts. What it creates is removed after.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hullft.compose import compose_config
from hullft.data.files import root
from hullft.engine.finetune import FinetuneEngine
from hullft.experts.merging import PEFT_PREFIX, MergedAdapters, expert_mixture, scoring_dtype
from hullft.experts.settings import ExpertSettings
from hullft.models import LoadedModel, load_tokenizer, resolve_dtype
from hullft.scoring.bpb import score_text

REPO = Path(__file__).resolve().parent.parent
QUERY = Path("/usr/share/common-licenses/GPL-3")


def smollm2_shaped(cfg) -> LoadedModel:
    tokenizer, fingerprint = load_tokenizer(cfg.model)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                                         max_position_embeddings=2048, tie_word_embeddings=True)).train()
    model.config.use_cache = False
    return LoadedModel(model, tokenizer, "smollm2-shaped", torch.device("cpu"), resolve_dtype(cfg.model), 2048,
                       fingerprint)


def random_experts(model, count: int, rank: int):
    g = torch.Generator().manual_seed(0)
    linear = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n]
    return [{**{f"{PEFT_PREFIX}{n}.lora_A.weight": torch.randn(rank, m.in_features, generator=g) * 0.01
                for n, m in linear},
             **{f"{PEFT_PREFIX}{n}.lora_B.weight": torch.randn(m.out_features, rank, generator=g) * 0.01
                for n, m in linear}} for _ in range(count)]


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def per_query(loaded, cfg, counts, rounds: int) -> None:
    settings = ExpertSettings()
    text = QUERY.read_text()[:4000] if QUERY.exists() else "def f(x):\n    return x + 1\n" * 160
    engine = FinetuneEngine(loaded, cfg.engine)
    print(f"query: {len(loaded.tokenizer(text).input_ids)} tokens; precision {loaded.dtype.value}; "
          f"threads {torch.get_num_threads()}")
    rng = np.random.default_rng(0)
    for count in counts:
        experts, scalings = random_experts(loaded.model, count, settings.rank), [settings.alpha / settings.rank] * count
        fused = MergedAdapters(loaded.model, experts, scalings, scoring_dtype(loaded))
        unfused = MergedAdapters(loaded.model, experts, scalings, scoring_dtype(loaded), fused=False)
        ways = {"beside the weights (default)": (fused, False), "beside, torch's addmm": (unfused, False),
                "in place, the engine resets": (fused, True)}
        if fused.fused is None:
            print("the fused merge cannot run here (no AVX2 and FMA, or no compiler): every way uses torch's addmm")
        centroids = rng.normal(size=(count, 384)).astype(np.float32)
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        query = centroids[0] + centroids[1]
        query /= np.linalg.norm(query)
        times = {way: {"base": [], "weigh": [], "merge": [], "restore": [], "score": []} for way in ways}
        for _ in range(rounds + 1):  # the first round warms up; the ways alternate within each round
            for way, (adapters, in_place) in ways.items():
                chosen = []

                def restore():
                    adapters.restore()
                    engine.dirty = engine.dirty or in_place  # as method=merge marks an in-place merge
                    engine.reset()

                t = {"base": _seconds(lambda: score_text(loaded, text, cfg.eval))}
                t["weigh"] = _seconds(lambda: chosen.append(expert_mixture(query, centroids, 0.2, 0.01, 50)))
                t["merge"] = _seconds(lambda: adapters.add(*chosen[-1][:2], in_place))
                t["score"] = _seconds(lambda: score_text(loaded, text, cfg.eval))
                t["restore"] = _seconds(restore)
                for k, v in t.items():
                    times[way][k].append(v)
        merges = {}
        for way in ways:
            med = {k: statistics.median(v[1:]) for k, v in times[way].items()}
            merges[way] = med["merge"]
            overhead = med["weigh"] + med["merge"] + med["restore"]
            print(f"{count} experts ({len(chosen[-1][0])} merged), {way}: weigh {med['weigh'] * 1e3:.2f} ms, merge "
                  f"{med['merge'] * 1e3:.1f} ms, restore {med['restore'] * 1e3:.2f} ms, score {med['score']:.3f} s; "
                  f"weigh + merge + restore = {overhead / med['score']:.3f} of scoring (target <= 0.10); the whole "
                  f"merged query {(overhead + med['score']) / med['base']:.3f} of the base model's scoring "
                  f"({med['base']:.3f} s)")
        default, addmm = merges["beside the weights (default)"], merges["beside, torch's addmm"]
        print(f"{count} experts: the default merge takes {default / addmm:.2f}x torch's addmm's time; experts held: "
              f"{fused.held_bytes() / 2**20:.0f} MiB")


def stage_memory(counts) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for count in counts:
        before = set(root().glob("experts-*")) if root().exists() else set()
        proc = subprocess.Popen([sys.executable, "-m", "hullft.data", "experts", "method=merge",
                                 f"method.experts.clusters={count}", "method.experts.steps=2"], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status):
            raise SystemExit(f"the experts stage failed:\n{output[-2000:]}")
        for made in set(root().glob("experts-*")) - before:
            shutil.rmtree(made)
        print(f"experts stage, {count} experts: peak RSS {usage.ru_maxrss / 1024:.0f} MiB, "
              f"{usage.ru_utime + usage.ru_stime:.0f} CPU s")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--experts", default="8,32")
    ap.add_argument("--stage", default="4,16", help="numbers of experts for the stage's memory; empty: skip")
    args = ap.parse_args(argv)
    cfg = compose_config(["method=merge"])
    per_query(smollm2_shaped(cfg), cfg, [int(c) for c in args.experts.split(",")], args.rounds)
    if args.stage:
        stage_memory([int(c) for c in args.stage.split(",")])


if __name__ == "__main__":
    main()
