"""ttmerge's rule (TestTimeMergingModel._load_merged_model), written out: which experts a query merges, and the
merged delta added to the base weights.

    k_i = exp(-(1 - cos(q, c_i)) / beta^2),  c = k / sum(k)     (k: ttmerge's affinity of query and expert)
    keep the experts with c_i > tau; more than `max_experts`: the max_experts largest k_i; none: the base model
    (non-finite coefficients: the nearest expert alone); the kept coefficients renormalised to sum to 1
    W += sum_i c_i * s_i * B_i A_i   for every adapted model weight W (s_i = lora_alpha / r)

"Weights" below are the model's; what each expert is merged with is its coefficient.

The experts' A and B are stacked once per shape of weight, so a query gathers its factors once per shape, and its
merge is one product per weight: on an x86 CPU with AVX2 and FMA fused with the pass over the weight (fused_merge.py),
elsewhere torch's addmm a block of rows at a time.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import torch
from transformers.pytorch_utils import Conv1D

from hullft.config import DType
from hullft.experts.fused_merge import fused_merge

PEFT_PREFIX = "base_model.model."


def expert_mixture(query: np.ndarray, centroids: np.ndarray, beta: float, tau: float,
                   max_experts: int) -> Tuple[List[int], List[float], float]:
    """(experts merged, their renormalised coefficients, the share of the affinities' mass they held before)."""
    q = torch.nn.functional.normalize(torch.as_tensor(query, dtype=torch.float32)[None], p=2, dim=1)
    similarities = torch.mm(q, torch.as_tensor(centroids, dtype=torch.float32).T).squeeze(0)
    affinity = torch.exp(-((1 - similarities) / beta ** 2))
    normalized = affinity / affinity.sum()
    mask = normalized > tau
    if not mask.any():
        if torch.isnan(normalized).any():
            return [int(torch.argmax(similarities))], [1.0], float("nan")
        return [], [], 0.0
    if int(mask.sum()) > max_experts:
        mask = torch.zeros_like(mask)
        mask[torch.topk(affinity, max_experts).indices] = True
    chosen = torch.where(mask)[0]
    kept = normalized[mask]
    return chosen.tolist(), (kept / kept.sum()).tolist(), float(kept.sum())


def scoring_dtype(loaded) -> Optional[torch.dtype]:
    """The dtype the job's scoring computes its matmuls in, where it differs from the weights' (bf16 autocast)."""
    return torch.bfloat16 if loaded.dtype == DType.bf16 else None


CHUNK = 1 << 20  # elements of a weight merged at a time on a CPU (4 MB of fp32: the block stays in cache)


class _Group(NamedTuple):
    """The adapted weights of one shape (say every layer's q_proj) with their experts' A and B stacked, so a query's
    coefficients and factors are gathered once per shape instead of once per weight."""
    weights: List[torch.nn.Parameter]
    positions: List[int]  # of the weights in MergedAdapters.weights (and its buffers)
    a: torch.Tensor  # (weights, experts, r, in)
    b: torch.Tensor  # (weights, out, experts, r): a query's experts' Bs side by side are a view
    transposed: bool  # Conv1D keeps its weight as (in, out)


class MergedAdapters:
    """Every expert's A and B stacked per shape of adapted weight of `model` (a plain model, not a PEFT wrapper).

    A merge is written beside the weights: each adapted weight's base + delta into a buffer of its own, which the
    module then reads, so undoing it (`restore`) points the modules back at their base weights without a pass over
    them. The buffers hold `scoring_dtype`: bf16 where the job scores under bf16 autocast, which would cast the
    merged fp32 weights to bf16 at every forward anyway (the same rounding, done once). Where captured graphs read
    the weights' storage (`in_place`), the delta is accumulated into the weights and the engine's reset restores
    them. Both ways compute alike (the fused kernel unless `fused=False` or it cannot run), so both give the same
    scores."""

    def __init__(self, model, adapters: List[Dict[str, torch.Tensor]], scalings: List[float],
                 scoring_dtype: Optional[torch.dtype] = None, fused: bool = True):
        self.scalings = torch.tensor(scalings, dtype=torch.float32)
        self.weights: List[torch.nn.Parameter] = []
        shapes: Dict[tuple, List[tuple]] = {}  # (shapes, device, transposed) -> [(position, weight, A's, B's)]
        for key in sorted(k for k in adapters[0] if ".lora_A." in k):
            module = model.get_submodule(key[len(PEFT_PREFIX):key.index(".lora_A.")])
            a = [adapter[key] for adapter in adapters]
            b = [adapter[key.replace(".lora_A.", ".lora_B.")] for adapter in adapters]
            kind = (tuple(a[0].shape), tuple(b[0].shape), module.weight.device, isinstance(module, Conv1D))
            shapes.setdefault(kind, []).append((len(self.weights), module.weight, a, b))
            self.weights.append(module.weight)
        if not self.weights:
            raise ValueError("the experts hold no LoRA weights")
        self.groups = [_Group([w for _, w, _, _ in members], [p for p, *_ in members],
                              _stack([a for *_, a, _ in members], device, 1),
                              _stack([b for *_, b in members], device, 2), transposed)
                       for (_, _, device, transposed), members in shapes.items()]
        self.scoring_dtype = scoring_dtype
        on_cpu = all(w.device.type == "cpu" and w.dtype == torch.float32 and w.is_contiguous() for w in self.weights)
        self.fused = fused_merge() if fused and on_cpu else None  # fused_merge.py; None: torch's addmm
        self.buffers: List[torch.Tensor] = []  # made on the first merge written beside the weights
        self.swapped: Dict[int, torch.Tensor] = {}  # position -> the base weight's storage while a merge is in
        self.scratch: Optional[torch.Tensor] = None

    @property
    def path(self) -> str:
        """Which computation merges: "fused" (fused_merge.py) or "torch" (addmm); their bf16 results may differ in
        the last bit of a few elements, so records carry it."""
        return "torch" if self.fused is None else "fused"

    def held_bytes(self) -> int:
        """What the experts' stacked factors take."""
        return sum(g.a.numel() * g.a.element_size() + g.b.numel() * g.b.element_size() for g in self.groups)

    def _make_buffers(self) -> None:
        self.buffers = [torch.empty_like(w, dtype=self.scoring_dtype or w.dtype) for w in self.weights]
        if self.fused is None and self.scoring_dtype not in (None, self.weights[0].dtype):
            self.scratch = torch.empty(max(_block_rows(w) * w.shape[1] for w in self.weights),
                                       dtype=self.weights[0].dtype, device=self.weights[0].device)

    @torch.no_grad()
    def add(self, experts: List[int], coefficients: List[float], in_place: bool = False) -> None:
        """Merge the experts' delta, each times its coefficient: per weight, one rank-(k*r) product added to it, so no (out, in)
        delta is ever written apart."""
        if self.swapped:
            raise RuntimeError("a merge is already in the weights; restore() it first")
        if not experts:
            return
        if not in_place and not self.buffers:
            self._make_buffers()
        chosen = torch.tensor(experts)
        coefficients = torch.tensor(coefficients, dtype=torch.float32) * self.scalings[chosen]
        for group in self.groups:
            count, k = len(group.weights), len(experts)
            (r, fan_in), fan_out = group.a.shape[2:], group.b.shape[1]
            # sum_k B_k (w_k s_k A_k) = [B_1 ... B_k] @ [w_1 s_1 A_1; ...; w_k s_k A_k], for every weight at once
            index = chosen.to(group.a.device)
            scaled = torch.index_select(group.a, 1, index).mul_(coefficients.to(group.a.device)[:, None, None])
            scaled = scaled.view(count, k * r, fan_in)
            stacked = torch.index_select(group.b, 2, index).view(count, fan_out, k * r)
            for weight, position, a, b in zip(group.weights, group.positions, scaled, stacked):
                left, right = (a.T, b.T) if group.transposed else (b, a)
                out = weight.data if in_place else self.buffers[position]
                if self.fused is not None:
                    self.fused.merge_into(weight.data, left.contiguous(), right.contiguous(), out)
                else:
                    _add_in_blocks(weight, left.to(weight.dtype), right.to(weight.dtype), out, self.scratch)
                if not in_place:
                    self.swapped[position] = weight.data
                    weight.data = out

    @torch.no_grad()
    def restore(self) -> None:
        """Point the modules back at their base weights (a merge written beside them; in place: nothing here)."""
        for position, base in self.swapped.items():
            self.weights[position].data = base
        self.swapped = {}


def _stack(factors: List[List[torch.Tensor]], device, experts_dim: int) -> torch.Tensor:
    """Each weight's list of its experts' factors as one fp32 tensor: (weights, ...), the experts at `experts_dim`."""
    return torch.stack([torch.stack(per_weight, dim=experts_dim - 1) for per_weight in factors]).to(device,
                                                                                                   torch.float32)


def _block_rows(weight: torch.Tensor) -> int:
    return weight.shape[0] if weight.is_cuda else max(1, CHUNK // weight.shape[1])


def _add_in_blocks(weight: torch.Tensor, left: torch.Tensor, right: torch.Tensor, out: torch.Tensor,
                   scratch: Optional[torch.Tensor]) -> None:
    """out = weight + left @ right, a block of rows at a time on a CPU (the same blocks whether `out` is the weight
    itself or a buffer beside it, so both ways round alike): addmm copies the base before the product, and a block
    that stays in cache is read from memory once instead of twice. `scratch` (a block's worth of the weight's
    dtype) holds the sum before its cast where `out` is of another dtype."""
    rows = _block_rows(weight)
    for begin in range(0, weight.shape[0], rows):
        block = slice(begin, min(begin + rows, weight.shape[0]))
        if out.data_ptr() == weight.data_ptr():
            weight[block].addmm_(left[block], right)
        elif scratch is None:
            torch.addmm(weight[block], left[block], right, out=out[block])
        else:
            part = scratch[:(block.stop - begin) * weight.shape[1]].view(block.stop - begin, weight.shape[1])
            out[block].copy_(torch.addmm(weight[block], left[block], right, out=part))
