"""What the hardware computes natively: the one place that decides `auto` precisions (model and embedder)."""
from __future__ import annotations

from pathlib import Path

import torch


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_name() -> str:
    """The CPU's model name (every timing names its CPU); "unknown" where /proc/cpuinfo does not say."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def cpu_flags() -> frozenset:
    """The CPU's feature flags (`lscpu`'s), empty where /proc/cpuinfo does not say."""
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """avx512_bf16 or AMX: there bf16 matmuls run ~2.5-9x faster than fp32; without them, many times slower."""
    return not cpu_flags().isdisjoint({"avx512_bf16", "amx_bf16"})


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 is the fast precision on `device`: a CUDA GPU that supports it, or a CPU with bf16 units."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()
