"""Sentence embedder: mean-pooled, L2-normalised transformer embeddings (all-MiniLM-L6-v2 by default)."""
from __future__ import annotations

import importlib.metadata
import os
from contextlib import contextmanager
from pathlib import Path
from typing import List, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer

from hullft.config import EmbedderConfig, EmbedderKind, EmbedderPrecision
from hullft.errors import ConfigError
from hullft.fused_encoder import fuse_dense_layers
from hullft.hardware import native_bf16
from hullft.memory import keep_freed_memory
from hullft.models import ModelNotAvailable, resolve_device

# Texts are embedded in batches of similar token counts: padding, and so the floating-point noise of each vector,
# differs from the batches of similar character counts of earlier builds, whose files must not be reused.
BATCHING = ":token-batches"
FUSED = ":onednn-fused"


def _package_model_dir(package: str) -> Path:
    try:
        files = importlib.metadata.files(package) or []
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotAvailable(f"embedder needs the pip package {package}: run `make install`") from None
    for f in files:
        if f.name == "config.json" and f.parent.name == "model":
            return Path(f.locate()).parent
    raise ModelNotAvailable(f"no model/config.json inside the installed package {package}")


def effective_precision(precision: EmbedderPrecision, device: torch.device) -> EmbedderPrecision:
    if precision == EmbedderPrecision.int8 and device.type != "cpu":
        raise ConfigError([f"embedder.precision=int8 runs on the CPU only, not {device.type}: use "
                           f"embedder.precision=auto or embedder.device=cpu"])
    if precision != EmbedderPrecision.auto:
        return precision
    return EmbedderPrecision.bf16 if native_bf16(device) else EmbedderPrecision.fp32


class Embedder:
    def __init__(self, cfg: EmbedderConfig):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        source = str(_package_model_dir(cfg.package)) if cfg.kind == EmbedderKind.package else cfg.hub_id
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModel.from_pretrained(source).to(self.device).eval()
        except (OSError, ValueError) as e:
            raise ModelNotAvailable(
                f"embedder={cfg.name}: '{source}' is not available offline ({type(e).__name__}); download it once "
                f"with `huggingface-cli download {source}` or set embedder.hub_id to a local directory") from None
        self.precision = effective_precision(cfg.precision, self.device)
        if self.precision == EmbedderPrecision.int8:
            self.model = torch.ao.quantization.quantize_dynamic(self.model, {torch.nn.Linear}, dtype=torch.qint8)
        if self.precision == EmbedderPrecision.bf16:
            # weights cast once rather than autocast: autocast re-casts every weight and activation per call
            # (1.2x slower on a 2-core EPYC), for no gain in the top-200 candidates (bench_default_build)
            self.model = self.model.to(torch.bfloat16)
        self.fused = cfg.fused and fuse_dense_layers(self.model)  # bf16 on a CPU only
        self.dim = int(self.model.config.hidden_size)
        # the precision, the kernels and the batching name their numerics (a bf16 model, not autocast; fused
        # dense layers; token batches), so spaces built with other numerics are not reused
        suffix = {EmbedderPrecision.fp32: "", EmbedderPrecision.bf16: ":bf16-model", EmbedderPrecision.int8: ":int8"}
        self.fingerprint = (f"{cfg.name}:{source if cfg.kind == EmbedderKind.hub else cfg.package}:{cfg.max_tokens}"
                            + suffix[self.precision] + (FUSED if self.fused else "") + BATCHING)
        self.batch_tokens = cfg.batch_tokens or (65536 if self.device.type == "cuda" else 4096)
        if self.device.type == "cpu":
            keep_freed_memory()

    @torch.no_grad()
    def _batch(self, ids: Sequence[List[int]]) -> np.ndarray:
        enc = self.tokenizer.pad({"input_ids": list(ids)}, return_tensors="pt").to(self.device)
        hidden = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(torch.float32)
        pooled = (hidden.float() * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy().astype(np.float32)

    def embed(self, texts: List[str], progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32, unit rows. All texts are tokenised first, then embedded in order of token
        count, in batches of at most `batch_size` sequences and `batch_tokens` padded tokens."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.cfg.max_tokens).input_ids
        batches = length_batches(np.array([len(i) for i in ids]), self.cfg.batch_size, self.batch_tokens)
        with every_core(self.device):
            for rows in tqdm(batches, desc=f"embedding ({self.cfg.name})", disable=not progress, unit="batch"):
                out[rows] = self._batch([ids[i] for i in rows])
        return out


@contextmanager
def every_core(device: torch.device):
    """On a CPU, torch's threads set to every core this process may run on (its affinity, which Slurm and
    taskset set), whatever a launcher's thread limit says: oneDNN's bf16 matmuls split a small batch's sums over
    threads (AMX), so a joblib worker held to one thread would embed other bits than a one-process build."""
    if device.type != "cpu" or not hasattr(os, "sched_getaffinity"):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def length_batches(lengths: np.ndarray, max_rows: int, max_tokens: int) -> List[np.ndarray]:
    """Row numbers in order of length (stable), cut into runs of at most max_rows rows whose padded size (rows x
    the longest) is at most max_tokens; a row longer than max_tokens is a batch of its own. Sorted lengths pad
    little, and on a CPU small batches keep the activations in cache: 1.2x faster than 32 a batch sorted by
    characters (benchmarks/bench_default_build.py)."""
    order = np.argsort(lengths, kind="stable")
    batches, start = [], 0
    for end in range(1, len(order) + 1):
        rows = end - start
        if end == len(order) or rows == max_rows or (rows + 1) * lengths[order[end]] > max_tokens:
            batches.append(order[start:end])
            start = end
    return batches
