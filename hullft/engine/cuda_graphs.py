"""Training steps and scoring windows replayed as CUDA graphs: the same kernels as eager, no launch overhead.

Measured on an H100 (../shared/REFERENCE.md): an eager SmolLM2-135M forward/backward issues ~3,500 kernel
launches and is bound by them (~120 ms where the kernels need ~15 ms). Captured once and replayed, the same
step runs at the kernels' speed. Manual capture (`torch.cuda.CUDAGraph`) takes about a second per shape;
`torch.compile(mode="reduce-overhead")` fuses kernels too but compiled for 86 s per shape there.

How the captured step stays equal to the eager one:
- Static inputs per length bucket: a sequence is right-padded to the next multiple of `engine.bucket` with
  label -100 on the padding; under causal attention its loss and gradients are those of the unpadded step.
- Gradients live in tensors allocated once; each forward/backward graph zeroes them first, and backward
  accumulates into them in place (0 + g = g exactly). The optimizer-step graph reads those same tensors.
- One fused, capturable Adam/AdamW for the job; `begin()` zeroes its state in place (a fresh optimizer).
  The engine's reset copies the weights back in place, so every graph keeps pointing at live storage.
- Gradient Reuse replays only the optimizer-step graph; the divergence guard reads loss and norm after
  each forward/backward (one small device-to-host copy).

The first capture of each shape is checked against eager before it is used (capture_check.py); a mismatch or a
capture error makes the job run eagerly, saying so.

`emulate=True` (tests on a CPU) runs the recorded functions instead of graphs: the same static buffers,
padding, state handling and step order, checkable against eager without a GPU.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from hullft.config import DType, EngineConfig
from hullft.engine.capture_check import CaptureFailed, capturing, check_logits, check_step, trains_with_dropout
from hullft.models import synchronize
from hullft.engine.train_steps import (bucket_length, loss_and_gradients, make_optimizer, padded,
                                zero_optimizer_state)

log = logging.getLogger(__name__)
WARMUP_ITERS = 3


def why_not_captured(cfg: EngineConfig, device: torch.device) -> Optional[str]:
    """None if the training step can run as CUDA graphs, else the reason it runs eagerly."""
    if device.type != "cuda":
        return f"device is {device.type}, not CUDA"
    if cfg.batch_size > 1:
        return f"engine.batch_size={cfg.batch_size}: micro-batches of several sequences are not captured"
    return None


class _Recorded:
    """A captured CUDA graph, or (emulate) the function itself, run again on each replay."""

    def __init__(self, fn: Callable, device: torch.device, emulate: bool, pool=None):
        self.fn, self.emulate = fn, emulate
        if emulate:
            self.out = fn()
            return
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up: lazy allocations and autotuning happen outside the capture
            for _ in range(WARMUP_ITERS):
                fn()
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.out = fn()

    def replay(self):
        if self.emulate:
            self.out = self.fn()
        else:
            self.graph.replay()
        return self.out


class CapturedSteps:
    """The `train_steps` protocol with the forward/backward per length bucket and the optimizer step as graphs."""

    def __init__(self, model, params, cfg: EngineConfig, dtype: DType, device: torch.device, context: int,
                 emulate: bool = False):
        self.model, self.params, self.cfg, self.dtype, self.device = model, params, cfg, dtype, device
        self.context, self.emulate = context, emulate
        self.pool = None if emulate else torch.cuda.graph_pool_handle()
        with torch.no_grad():
            for p in params:
                p.grad = torch.zeros_like(p)
        self.grads = [p.grad for p in params]
        self.buffers: Dict[int, Tuple[torch.Tensor, torch.Tensor]] = {}
        self.graphs: Dict[int, _Recorded] = {}
        self.optimizer = make_optimizer(cfg, params, capturable=not emulate)
        # the step graph's warm-up updates weights and state: the engine restores both before any query
        self.step_graph = capturing("the optimizer step", lambda: _Recorded(self._optimizer_step, device, emulate,
                                                                           self.pool))
        self.capture_seconds = 0.0

    def _optimizer_step(self) -> None:
        self.optimizer.step()

    def _forward_backward_fn(self, ids: torch.Tensor, labels: torch.Tensor) -> Callable[[], torch.Tensor]:
        def body() -> torch.Tensor:
            torch._foreach_zero_(self.grads)
            loss, norm = loss_and_gradients(self.model, ids, None, labels, self.params, self.dtype,
                                            self.cfg.max_grad_norm, capturing=True)
            return torch.stack([loss.float(), norm.float()])
        return body

    def _check_gradients(self, hint: str) -> None:
        """The graphs read and write the gradient tensors made in __init__: they must still be the ones in .grad."""
        if any(p.grad is not g for p, g in zip(self.params, self.grads)):
            raise RuntimeError(f"the captured engine's gradient tensors were replaced ({hint})")

    def prepare(self, lengths: Sequence[int]) -> float:
        """Capture the forward/backward graph of every bucket these lengths need and that is not captured yet,
        each checked against eager (CaptureFailed if it fails or differs)."""
        self._check_gradients("a second engine on the same model? use one engine per model")
        start = time.perf_counter()
        for length in sorted({bucket_length(n, self.cfg.bucket, self.context) for n in lengths}):
            if length in self.graphs:
                continue
            ids = torch.zeros((1, length), dtype=torch.long, device=self.device)
            labels = torch.zeros_like(ids)  # real labels during warm-up keep the loss finite
            recorded = capturing(f"the {length}-token training step", lambda: _Recorded(
                self._forward_backward_fn(ids, labels), self.device, self.emulate, self.pool))
            self._check_gradients("backward reallocated them during capture; run with engine.cuda_graphs=false")
            self.graphs[length], self.buffers[length] = recorded, (ids, labels)
            if trains_with_dropout(self.model):
                log.info("the captured %d-token training step is not checked against eager: the model trains "
                         "with dropout, whose random draws differ", length)
            else:
                check_step(self, length)
        synchronize(self.device)
        seconds = time.perf_counter() - start
        if seconds > 0.05:
            log.info("captured training steps for buckets %s in %.2f s", sorted(self.graphs), seconds)
        self.capture_seconds += seconds
        return seconds

    def begin(self) -> None:
        zero_optimizer_state(self.optimizer)

    def forward_backward(self, sequences: List[List[int]]) -> Tuple[float, float]:
        (sequence,) = sequences
        length = bucket_length(len(sequence), self.cfg.bucket, self.context)
        ids, labels = padded(sequence, length)
        static_ids, static_labels = self.buffers[length]
        static_ids.copy_(ids, non_blocking=True)
        static_labels.copy_(labels, non_blocking=True)
        loss, norm = self.graphs[length].replay().tolist()
        return loss, norm

    def optimizer_step(self) -> None:
        self.step_graph.replay()

    def end(self) -> None:
        pass  # gradients keep their storage; the next forward/backward graph zeroes them

    def reset(self) -> None:
        pass


class CapturedLogits:
    """Scoring forward passes as graphs, one per window-length bucket: a window's inputs are right-padded
    (causal attention: the real positions' logits are unchanged) and its logits read from a static buffer."""

    def __init__(self, model, dtype: DType, device: torch.device, bucket: int, context: int, emulate: bool = False):
        self.model, self.dtype, self.device = model, dtype, device
        self.bucket, self.context, self.emulate = bucket, context, emulate
        self.graphs: Dict[int, Tuple[torch.Tensor, _Recorded]] = {}
        self.capture_seconds = 0.0
        self.failed = ""  # why scoring went eager, once a capture failed or differed from eager

    def _capture(self, length: int) -> Tuple[torch.Tensor, _Recorded]:
        """The window's graph, checked against eager (CaptureFailed if it fails or differs)."""
        start = time.perf_counter()
        ids = torch.zeros((1, length), dtype=torch.long, device=self.device)

        def body() -> torch.Tensor:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.dtype == DType.bf16,
                                cache_enabled=False):
                return self.model(input_ids=ids).logits[0]

        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            recorded = capturing(f"the {length}-token scoring window",
                                 lambda: _Recorded(body, self.device, self.emulate, None))
        self.model.train(was_training)
        check_logits(self, length, ids, recorded)
        self.capture_seconds += time.perf_counter() - start
        return ids, recorded

    def _eager(self, inputs: List[int]) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.dtype == DType.bf16):
            return self.model(input_ids=torch.tensor([inputs], device=self.device)).logits[0]

    def _capture_or_fall_back(self, length: int) -> None:
        try:
            self.graphs[length] = self._capture(length)
        except CaptureFailed as e:
            self.failed = str(e)
            log.warning("engine.cuda_graphs: %s; this job scores eagerly", e)

    def prepare(self, window: int) -> float:
        """Capture every bucket a window of at most `window` tokens can need (once per job, outside t_eval)."""
        before = self.capture_seconds
        top = bucket_length(min(window, self.context), self.bucket, self.context)
        for length in sorted({bucket_length(n, self.bucket, self.context) for n in range(1, top + 1)}):
            if length not in self.graphs and not self.failed:
                self._capture_or_fall_back(length)
        synchronize(self.device)
        log.info("captured scoring windows %s in %.2f s", sorted(self.graphs), self.capture_seconds - before)
        return self.capture_seconds - before

    def __call__(self, inputs: List[int]) -> torch.Tensor:
        length = bucket_length(len(inputs), self.bucket, self.context)
        if length not in self.graphs and not self.failed:
            self._capture_or_fall_back(length)
        if self.failed:
            return self._eager(inputs)
        ids, recorded = self.graphs[length]
        ids.zero_()
        ids[0, :len(inputs)] = torch.tensor(inputs, device=self.device)
        return recorded.replay()[:len(inputs)]
