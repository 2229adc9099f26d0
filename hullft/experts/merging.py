"""ttmerge's rule (TestTimeMergingModel._load_merged_model), written out: which experts a query merges, and the
merged delta added to the base weights.

    k_i = exp(-(1 - cos(q, c_i)) / beta^2),  w = k / sum(k)
    keep the experts with w_i > tau; more than `max_experts`: the max_experts largest k_i; none: the base model
    (non-finite weights: the nearest expert alone); the kept weights renormalised to sum to 1
    W += sum_i w_i * s_i * B_i A_i   for every adapted weight W (s_i = lora_alpha / r)

The experts' A and B are stacked per weight once, so a query's merge is one batched product per weight.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import torch
from transformers.pytorch_utils import Conv1D

PEFT_PREFIX = "base_model.model."


def expert_weights(query: np.ndarray, centroids: np.ndarray, beta: float, tau: float,
                   max_experts: int) -> Tuple[List[int], List[float], float]:
    """(experts merged, their renormalised weights, the share of the kernel's mass they held before that)."""
    q = torch.nn.functional.normalize(torch.as_tensor(query, dtype=torch.float32)[None], p=2, dim=1)
    similarities = torch.mm(q, torch.as_tensor(centroids, dtype=torch.float32).T).squeeze(0)
    kernel = torch.exp(-((1 - similarities) / beta ** 2))
    normalized = kernel / kernel.sum()
    mask = normalized > tau
    if not mask.any():
        if torch.isnan(normalized).any():
            return [int(torch.argmax(similarities))], [1.0], float("nan")
        return [], [], 0.0
    if int(mask.sum()) > max_experts:
        mask = torch.zeros_like(mask)
        mask[torch.topk(kernel, max_experts).indices] = True
    chosen = torch.where(mask)[0]
    kept = normalized[mask]
    return chosen.tolist(), (kept / kept.sum()).tolist(), float(kept.sum())


class MergedAdapters:
    """Every expert's A and B stacked per adapted weight of `model` (a plain model, not a PEFT wrapper)."""

    def __init__(self, model, adapters: List[Dict[str, torch.Tensor]], scalings: List[float]):
        self.scalings = torch.tensor(scalings, dtype=torch.float32)
        self.targets = []  # (weight parameter, stacked A (E, r, in), stacked B (E, out, r), transposed)
        for key in sorted(k for k in adapters[0] if ".lora_A." in k):
            path = key[len(PEFT_PREFIX):key.index(".lora_A.")]
            module = model.get_submodule(path)
            device = module.weight.device
            a = torch.stack([adapter[key] for adapter in adapters]).to(device, torch.float32)
            b = torch.stack([adapter[key.replace(".lora_A.", ".lora_B.")] for adapter in adapters]).to(device,
                                                                                                         torch.float32)
            self.targets.append((module.weight, a, b, isinstance(module, Conv1D)))
        if not self.targets:
            raise ValueError("the experts hold no LoRA weights")

    @torch.no_grad()
    def add(self, experts: List[int], weights: List[float]) -> None:
        """Add the weighted experts' delta to the model's weights (the engine's reset restores them): per weight,
        one rank-(k*r) product accumulated into it in place, so no (out, in) delta is ever written apart."""
        if not experts:
            return
        chosen = torch.tensor(experts)
        coefficients = torch.tensor(weights, dtype=torch.float32) * self.scalings[chosen]
        for weight, a, b, transposed in self.targets:
            k, r, fan_in = len(experts), a.shape[1], a.shape[2]
            scaled = (a[chosen] * coefficients.to(a.device)[:, None, None]).reshape(k * r, fan_in)
            stacked = b[chosen].permute(1, 0, 2).reshape(-1, k * r)  # [B_1 ... B_k]: (out, k r)
            # sum_k B_k (w_k s_k A_k) = [B_1 ... B_k] @ [w_1 s_1 A_1; ...; w_k s_k A_k]
            if transposed:
                weight.addmm_(scaled.T.to(weight.dtype), stacked.T.to(weight.dtype))
            else:
                weight.addmm_(stacked.to(weight.dtype), scaled.to(weight.dtype))
