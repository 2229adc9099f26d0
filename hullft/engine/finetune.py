"""The shared finetune engine: one optimizer step per multiset element, Gradient Reuse, bit-exact reset.

The engine sees token sequences and their multiplicities, never how they were chosen. How a step runs
(eager calls, a compiled model on a CPU, or replayed CUDA graphs on a GPU) is `self.steps`: see train_steps.py,
compiled.py and cuda_graphs.py.

Gradient Reuse (refresh interval r): a fresh forward/backward runs on the first of every r consecutive
steps on the same sequence; the steps in between apply the optimizer again with the gradient that is
still in `.grad` (nothing is copied). In grouped order a sequence with multiplicity J therefore costs
ceil(J / r) passes.
"""
from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch

from hullft.config import EngineConfig, StepOrder
from hullft.engine.compiled import CompiledSteps, compile_wanted, why_not_compiled
from hullft.engine.capture_check import CaptureFailed
from hullft.engine.cuda_graphs import CapturedSteps, why_not_captured
from hullft import progress
from hullft.memory import keep_freed_memory
from hullft.models import LoadedModel, synchronize
from hullft.engine.train_steps import EagerSteps

log = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    fwd_bwd: int         # forward/backward passes run
    opt_steps: int       # optimizer steps taken
    diverged: bool       # a non-finite loss or gradient stopped finetuning
    mean_loss: float     # mean training loss over the fresh passes
    tokens: int          # real tokens run through forward/backward (padding not counted)
    seconds: float
    capture_seconds: float = 0.0  # compiling or CUDA-graph capture done before this query's steps (not in `seconds`)
    token_pairs: int = 0          # sum over passes of length squared (attention's cost; see hullft/flops.py)


def step_plan(counts: Sequence[int], order: StepOrder, picks: Optional[Sequence[int]] = None) -> List[int]:
    """Which element (position in `counts`) each optimizer step trains on."""
    if order == StepOrder.grouped or (order == StepOrder.as_selected and picks is None):
        return [k for k, c in enumerate(counts) for _ in range(c)]
    if order == StepOrder.as_selected:
        return list(picks)
    plan, remaining = [], list(counts)
    while any(remaining):
        for k, c in enumerate(remaining):
            if c:
                plan.append(k)
                remaining[k] -= 1
    return plan


def fresh_passes(plan: Sequence[int], refresh_interval: int) -> List[bool]:
    """For each step, whether it runs forward/backward (True) or reuses the gradient in place (False)."""
    fresh, run = [], 0
    for i, k in enumerate(plan):
        run = run + 1 if i > 0 and plan[i - 1] == k else 0
        fresh.append(run % refresh_interval == 0)
    return fresh


def graphs_wanted(setting) -> Optional[bool]:
    """engine.cuda_graphs as True, False or None (auto); YAML and the command line may give a bool."""
    value = str(setting).lower()
    if value not in ("auto", "true", "false"):
        raise ValueError(f"engine.cuda_graphs={setting}: use auto, true or false")
    return None if value == "auto" else value == "true"


class FinetuneEngine:
    """`expected_steps`: the optimizer steps the job expects to take, from which engine.compile=auto decides."""

    def __init__(self, loaded: LoadedModel, cfg: EngineConfig, emulate_graphs: bool = False, expected_steps: int = 0):
        if cfg.refresh_interval < 1 or cfg.batch_size < 1 or cfg.bucket < 1:
            raise ValueError("engine.refresh_interval, engine.batch_size and engine.bucket must be >= 1")
        self.cfg = cfg
        self.loaded = loaded
        self.device = loaded.device
        if self.device.type == "cpu":
            keep_freed_memory()  # a step's large tensors reuse the last step's pages (hullft/memory.py)
        self.model = self._with_lora(loaded.model) if cfg.lora else loaded.model
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.state = list(self.model.parameters()) + list(self.model.buffers())
        self.snapshot = [t.detach().clone() for t in self.state]  # on the device, made once
        self.dirty = True  # the weights may differ from the snapshot: set by finetune and by whatever else changes them
        self.steps = self._make_steps(emulate_graphs, expected_steps)
        self.reset()

    @property
    def captured(self) -> bool:
        return isinstance(self.steps, CapturedSteps)

    @property
    def compiled(self) -> bool:
        return isinstance(self.steps, CompiledSteps)

    @property
    def sparse_embedding_grad(self) -> bool:
        """Whether the tied embedding's gradient is formed sparse (train_steps.py)."""
        return bool(getattr(self.steps, "sparse_embedding_grad", False))

    def _make_steps(self, emulate: bool, expected_steps: int):
        args = (self.model, self.params, self.cfg, self.loaded.dtype, self.device)
        wanted = graphs_wanted(self.cfg.cuda_graphs)
        why = None if emulate else why_not_captured(self.cfg, self.device)
        if wanted is not False and not why:
            try:
                return CapturedSteps(*args, context=self.loaded.context_length, emulate=emulate)
            except CaptureFailed as e:
                why = str(e)
        if why and (wanted or self.device.type == "cuda" or emulate):
            log.warning("engine.cuda_graphs=%s: training steps run eagerly: %s", self.cfg.cuda_graphs, why)
        not_compiled = why_not_compiled(self.cfg.compile, self.loaded.fingerprint, self.loaded.dtype, self.device,
                                        expected_steps, self.cfg.batch_size)
        if not_compiled is None:
            return CompiledSteps(*args, fingerprint=self.loaded.fingerprint)
        if compile_wanted(self.cfg.compile):
            log.warning("engine.compile=true: training steps run eagerly: %s", not_compiled)
        else:
            log.info("training steps run eagerly: %s", not_compiled)
        return EagerSteps(*args)

    def _with_lora(self, model):
        from peft import LoraConfig, get_peft_model

        return get_peft_model(model, LoraConfig(r=self.cfg.lora_r, lora_alpha=self.cfg.lora_alpha,
                                                target_modules="all-linear", lora_dropout=0.0))

    def _prepare(self, lengths: List[int]) -> float:
        """The steps' one-off work for these lengths; a captured step that fails its check against eager makes
        this engine's steps eager from here on (compiling or capturing was never part of a query's seconds)."""
        try:
            return self.steps.prepare(lengths)
        except CaptureFailed as e:
            log.warning("engine.cuda_graphs=%s: %s; this job's training steps run eagerly", self.cfg.cuda_graphs, e)
            self.steps = EagerSteps(self.model, self.params, self.cfg, self.loaded.dtype, self.device)
            self.steps.reset()
            return 0.0

    @torch.no_grad()
    def reset(self) -> None:
        """Restore every parameter and buffer bit-exactly from the snapshot, in place (storage is kept, so
        captured graphs stay valid), unless nothing changed them since the last reset (a pass over every weight
        saved for queries that train nothing); eager steps also drop their gradients."""
        if self.dirty:
            torch._foreach_copy_(self.state, self.snapshot)
            self.dirty = False
        self.steps.reset()

    def finetune(self, sequences: Sequence[Sequence[int]], counts: Sequence[int],
                 picks: Optional[Sequence[int]] = None, max_length: Optional[int] = None,
                 checkpoints: Sequence[int] = (), on_checkpoint: Optional[Callable] = None) -> FinetuneResult:
        """Train on each sequence counts[k] times (truncated to max_length, never padded to it; captured steps
        pad to a length bucket, and count only the real tokens).

        After the m-th optimizer step for each m in `checkpoints`, `on_checkpoint(m, result so far)` is
        called with the clock stopped (an anytime curve scores the prompt there); a divergence calls it for
        the checkpoints it skips, with the weights as they stopped."""
        seqs = [list(s)[:max_length] if max_length else list(s) for s in sequences]
        self.dirty = True
        capture = self._prepare([len(s) for s in seqs])  # one-off, outside the timed steps
        synchronize(self.device)
        clock = _Clock()
        torch.manual_seed(self.cfg.seed)
        plan = step_plan(counts, self.cfg.order, picks)
        bs = self.cfg.batch_size
        if bs > 1:
            steps = [plan[i:i + bs] for i in range(0, len(plan), bs)]
            fresh = [True] * len(steps)
        else:
            steps = [[k] for k in plan]
            fresh = fresh_passes(plan, self.cfg.refresh_interval)
        self.steps.begin()
        passes, taken, tokens, pairs, losses, diverged = 0, 0, 0, 0, [], False
        marks = sorted(m for m in set(checkpoints) if 0 < m < len(steps))

        def result() -> FinetuneResult:
            return FinetuneResult(fwd_bwd=passes, opt_steps=taken, diverged=diverged, tokens=tokens,
                                  token_pairs=pairs,
                                  mean_loss=sum(losses) / len(losses) if losses else float("nan"),
                                  seconds=clock.seconds(self.device), capture_seconds=capture)

        for elements, is_fresh in zip(steps, fresh):
            if is_fresh:
                loss, norm = self.steps.forward_backward([seqs[k] for k in elements])
                passes += 1
                tokens += sum(len(seqs[k]) for k in elements)
                pairs += sum(len(seqs[k]) ** 2 for k in elements)
                if not (math.isfinite(loss) and math.isfinite(norm)):
                    diverged = True
                    break
                losses.append(loss)
            self.steps.optimizer_step()
            taken += 1
            progress.mark()
            if marks and marks[0] == taken:
                so_far = result()
                with clock.paused(self.device):
                    on_checkpoint(marks.pop(0), so_far)
        self.steps.end()
        final = result()
        for m in marks:  # skipped by a divergence: a standalone run at m stops at the same step
            on_checkpoint(m, final)
        return final


class _Clock:
    """Seconds of training, with the pauses for checkpoint scoring left out (synchronised on CUDA)."""

    def __init__(self):
        self.start, self.paused_for = time.perf_counter(), 0.0

    def seconds(self, device) -> float:
        synchronize(device)
        return time.perf_counter() - self.start - self.paused_for

    @contextmanager
    def paused(self, device):
        synchronize(device)
        begin = time.perf_counter()
        try:
            yield
        finally:
            synchronize(device)
            self.paused_for += time.perf_counter() - begin
