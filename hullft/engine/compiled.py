"""Training steps through `torch.compile` on a CPU: the eager protocol, with the model's forward and backward compiled.

Measured on a 2-core Intel Xeon with AMX (SmolLM2-135M shape, 256 tokens, bf16 autocast; docs/performance.md):
a compiled bf16 step ran 1.43x faster than the eager bf16 one (0.49 s saved at 256 tokens), but compiling cost
130-142 s from a cold cache and 42-44 s once inductor's on-disk cache held the graph. So:

- One graph for every sequence length (`dynamic=True`): pool sequences differ in length, and a graph per
  length would compile for every new one. The graph is compiled by `prepare` before a query's timed steps
  (the runner's untimed warm-up), its seconds reported apart from `t_finetune`.
- inductor's caches live in the harness's cache (`<cache>/inductor`), so the next job of the same model and
  precision starts warm; a marker beside them records that a graph was compiled, which `auto` reads.
- `engine.compile=auto` compiles when the job's training steps pay for the compile: bf16 only (fp32's gain was
  1.09x in one interleaved probe and 1.56x in another, and is unmeasured on CPUs without bf16), on a CPU (CUDA has its captured graphs), and at least `WARM_STEPS` expected steps
  with a warm cache or `COLD_STEPS` with a cold one (compile seconds / seconds saved per step).
- Random ops (GPT-2's dropout) draw from eager's generator (`fallback_random`), so a compiled step equals the
  eager one to rounding.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Optional, Sequence

import torch

from hullft.cache import cache_root, content_hash
from hullft.config import DType
from hullft.engine.train_steps import EagerSteps

log = logging.getLogger(__name__)
# Break-even of the 135M model at ~0.49 s saved per bf16 step: ~135 s cold (~280 steps), ~43 s warm (~90 steps);
# with margin for smaller savings on shorter sequences.
COLD_STEPS = 600
WARM_STEPS = 100


def compile_wanted(setting) -> Optional[bool]:
    """engine.compile as True, False or None (auto); YAML and the command line may give a bool."""
    value = str(setting).lower()
    if value not in ("auto", "true", "false"):
        raise ValueError(f"engine.compile={setting}: use auto, true or false")
    return None if value == "auto" else value == "true"


def use_inductor_cache() -> None:
    """inductor's on-disk caches under the harness's cache (kept across jobs), unless the user placed them."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_root() / "inductor"))


def _marker(fingerprint: str, dtype: DType):
    return cache_root() / "inductor" / "compiled" / content_hash(fingerprint, dtype.value, torch.__version__)


def why_not_compiled(setting, fingerprint: str, dtype: DType, device: torch.device, expected_steps: int,
                     batch_size: int) -> Optional[str]:
    """None if the job's training steps should be compiled, else why they run eagerly."""
    wanted = compile_wanted(setting)
    if wanted is False:
        return "engine.compile=false"
    if device.type != "cpu":
        return f"device is {device.type}: CUDA runs captured graphs (engine.cuda_graphs)"
    if batch_size > 1:
        return f"engine.batch_size={batch_size}: micro-batches are not compiled"
    if wanted:
        return None
    if dtype != DType.bf16:
        return "engine.compile=auto compiles bf16 steps only (fp32 gains ~1.1x, too little for the compile)"
    warm = _marker(fingerprint, dtype).exists()
    needed = WARM_STEPS if warm else COLD_STEPS
    if expected_steps < needed:
        return (f"engine.compile=auto: {expected_steps} expected steps do not pay for a "
                f"{'warm' if warm else 'cold'} compile (>= {needed})")
    return None


class CompiledSteps(EagerSteps):
    """EagerSteps whose forward/backward runs the compiled model (same parameters, same optimizer)."""

    def __init__(self, model, params, cfg, dtype: DType, device: torch.device, fingerprint: str):
        super().__init__(model, params, cfg, dtype, device)
        use_inductor_cache()
        self.marker = _marker(fingerprint, dtype)
        self.forward_model = torch.compile(model, dynamic=True, options={"fallback_random": True})
        self.sparse_embedding_grad = False  # the dense gradient, as compiled and measured (a sparse one is untried)
        self.ready = False  # compiled: one dynamic graph serves every later length

    def prepare(self, lengths: Sequence[int]) -> float:
        """Compiles on the first call (a forward/backward on a sequence of the first length, gradients
        dropped); the graph is dynamic in the length, so later calls cost nothing."""
        if self.ready or not lengths:
            return 0.0
        start = time.perf_counter()
        length = max(2, min(lengths))
        rng = torch.get_rng_state()
        self.forward_backward([[0] * length])
        torch.set_rng_state(rng)
        self.reset()
        self.ready = True
        seconds = time.perf_counter() - start
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        self.marker.touch()
        log.info("engine.compile: training step compiled in %.1f s (outside every query's t_finetune)", seconds)
        return seconds
