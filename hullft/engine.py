"""The shared finetune engine: one optimizer step per multiset element, Gradient Reuse, bit-exact reset.

The engine sees token sequences and their multiplicities, never how they were chosen.

Gradient Reuse (refresh interval r): a fresh forward/backward runs on the first of every r consecutive
steps on the same sequence; the steps in between apply the optimizer again with the gradient that is
still in `.grad` (nothing is copied). In grouped order a sequence with multiplicity J therefore costs
ceil(J / r) passes.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from hullft.config import DType, EngineConfig, Optimizer, StepOrder
from hullft.models import LoadedModel


@dataclass
class FinetuneResult:
    fwd_bwd: int         # forward/backward passes run
    opt_steps: int       # optimizer steps taken
    diverged: bool       # a non-finite loss or gradient stopped finetuning
    mean_loss: float     # mean training loss over the fresh passes
    tokens: int          # tokens run through forward/backward
    seconds: float


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


class FinetuneEngine:
    def __init__(self, loaded: LoadedModel, cfg: EngineConfig):
        if cfg.refresh_interval < 1 or cfg.batch_size < 1:
            raise ValueError("engine.refresh_interval and engine.batch_size must be >= 1")
        self.cfg = cfg
        self.loaded = loaded
        self.device = loaded.device
        self.model = self._with_lora(loaded.model) if cfg.lora else loaded.model
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.state = list(self.model.parameters()) + list(self.model.buffers())
        self.snapshot = [t.detach().clone() for t in self.state]  # on the device, made once

    def _with_lora(self, model):
        from peft import LoraConfig, get_peft_model

        return get_peft_model(model, LoraConfig(r=self.cfg.lora_r, lora_alpha=self.cfg.lora_alpha,
                                                target_modules="all-linear", lora_dropout=0.0))

    @torch.no_grad()
    def reset(self) -> None:
        """Restore every parameter and buffer bit-exactly from the snapshot; drop gradients."""
        torch._foreach_copy_(self.state, self.snapshot)
        for p in self.params:
            p.grad = None

    def _optimizer(self) -> torch.optim.Optimizer:
        cls = torch.optim.AdamW if self.cfg.optimizer == Optimizer.adamw else torch.optim.Adam
        # the fused kernel (CPU and CUDA) does the whole update in one pass over the parameters
        return cls(self.params, lr=self.cfg.lr, eps=self.cfg.eps, weight_decay=self.cfg.weight_decay, fused=True)

    def _batch(self, sequences: List[List[int]]) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
        """Right-padded ids, attention mask and labels (-100 on padding); one sequence needs neither padding
        nor a mask (which would also keep attention off its fast causal path)."""
        if len(sequences) == 1:
            ids = torch.tensor([sequences[0]], device=self.device)
            return ids, None, ids
        longest = max(len(s) for s in sequences)
        ids = torch.zeros((len(sequences), longest), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, seq in enumerate(sequences):
            ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        return ids.to(self.device), mask.to(self.device), labels.to(self.device)

    def _forward_backward(self, batch) -> Tuple[float, float]:
        ids, mask, labels = batch
        for p in self.params:
            p.grad = None
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.loaded.dtype == DType.bf16):
            loss = self.model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads)
        if self.cfg.max_grad_norm is not None and math.isfinite(norm.item()):
            torch.nn.utils.clip_grads_with_norm_(self.params, self.cfg.max_grad_norm, norm)
        return float(loss.item()), float(norm.item())

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def finetune(self, sequences: Sequence[Sequence[int]], counts: Sequence[int],
                 picks: Optional[Sequence[int]] = None, max_length: Optional[int] = None) -> FinetuneResult:
        """Train on each sequence counts[k] times (truncated to max_length, never padded to it)."""
        self._sync()
        start = time.perf_counter()
        torch.manual_seed(self.cfg.seed)
        seqs = [list(s)[:max_length] if max_length else list(s) for s in sequences]
        plan = step_plan(counts, self.cfg.order, picks)
        bs = self.cfg.batch_size
        if bs > 1:
            steps = [plan[i:i + bs] for i in range(0, len(plan), bs)]
            fresh = [True] * len(steps)
        else:
            steps = [[k] for k in plan]
            fresh = fresh_passes(plan, self.cfg.refresh_interval)
        optimizer = self._optimizer()
        passes, taken, tokens, losses, diverged = 0, 0, 0, [], False
        for elements, is_fresh in zip(steps, fresh):
            if is_fresh:
                loss, norm = self._forward_backward(self._batch([seqs[k] for k in elements]))
                passes += 1
                tokens += sum(len(seqs[k]) for k in elements)
                if not (math.isfinite(loss) and math.isfinite(norm)):
                    diverged = True
                    break
                losses.append(loss)
            optimizer.step()
            taken += 1
        for p in self.params:
            p.grad = None
        self._sync()
        return FinetuneResult(fwd_bwd=passes, opt_steps=taken, diverged=diverged, tokens=tokens,
                              mean_loss=sum(losses) / len(losses) if losses else float("nan"),
                              seconds=time.perf_counter() - start)
