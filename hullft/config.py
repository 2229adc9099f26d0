"""Structured configs: the schema Hydra checks every run against (wrong type or unknown key fails at start)."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, List, Optional

import hashlib

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


class ModelKind(Enum):
    gguf_package = "gguf_package"  # a GGUF file shipped inside a pip package (the embedded default)
    hub = "hub"                    # a Hugging Face id or local directory
    tiny = "tiny"                  # a small random GPT-2 built from a config, byte tokenizer (tests)


class DType(Enum):
    auto = "auto"  # bf16 autocast where the hardware computes bf16 natively (CUDA; CPUs with avx512_bf16/AMX), else fp32
    fp32 = "fp32"
    bf16 = "bf16"  # autocast: matmuls in bf16, fp32 master weights and optimizer state


@dataclass
class ModelConfig:
    name: str = MISSING
    kind: ModelKind = ModelKind.hub
    hub_id: str = ""
    gguf_package: str = ""
    gguf_file: str = ""
    dtype: DType = DType.auto
    device: str = "auto"
    # tiny models only
    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 2
    n_positions: int = 512


class EmbedderKind(Enum):
    package = "package"  # a sentence-transformers model shipped inside a pip package
    hub = "hub"


class EmbedderPrecision(Enum):
    auto = "auto"  # bf16 where the hardware computes it natively (CUDA; CPUs with avx512_bf16/AMX), else fp32
    fp32 = "fp32"
    bf16 = "bf16"  # the model cast to bf16
    int8 = "int8"  # dynamic int8 quantisation of the Linear layers (CPU only)


@dataclass
class EmbedderConfig:
    name: str = MISSING
    kind: EmbedderKind = EmbedderKind.package
    package: str = ""
    hub_id: str = ""
    max_tokens: int = 256
    batch_size: int = 64                 # at most this many sequences per batch ...
    batch_tokens: Optional[int] = None   # ... and this many padded tokens (null: 4096 on a CPU, 65536 on CUDA)
    precision: EmbedderPrecision = EmbedderPrecision.auto
    fused: bool = True                   # bf16 on a CPU: oneDNN's fused dense layers (hullft/fused_encoder.py)
    device: str = "auto"


class CorpusKind(Enum):
    offline_mix = "offline_mix"
    jsonl = "jsonl"


class EmbeddingDType(Enum):
    fp32 = "fp32"
    fp16 = "fp16"  # half the disk and RAM; candidates are read back as fp32 for the selectors


@dataclass
class DataConfig:
    name: str = MISSING
    kind: CorpusKind = CorpusKind.offline_mix
    path: str = ""                  # jsonl only
    domains: List[str] = field(default_factory=list)  # empty = every available domain
    max_length: int = 256           # tokens per training sequence
    min_length: int = 16            # shorter chunks are dropped
    max_doc_chars: int = 4000       # longer sources are cut into documents at line breaks
    query_fraction: float = 0.1     # share of sources held out as query documents
    max_pool_per_domain: int = 1000
    max_docs_per_domain: int = 1200
    max_docs_per_source: int = 10    # a huge file (one 2 MB copyright file) must not fill a domain
    seed: int = 0
    index: str = "flat"             # flat | ivf | hnsw | any faiss index_factory string, e.g. IVF65536_HNSW32,PQ64
    index_train_size: int = 100000  # rows a trainable index learns from (a seeded sample)
    index_rerank: int = 0           # rescore this many index candidates exactly from the embeddings (0: none)
    index_part_rows: int = 0        # rows an index file holds (0: one file); the merge holds one file's codes
    ivf_nlist: int = 64
    ivf_nprobe: int = 16
    hnsw_m: int = 32
    embedding_dtype: EmbeddingDType = EmbeddingDType.fp32
    unit_docs: int = 2000           # pool documents per build unit (the grain of sharded builds)
    shard: int = 0                  # `python -m hullft.data build` builds the units of this shard only ...
    num_shards: int = 1             # ... when there are several (then `python -m hullft.data merge`)


class Optimizer(Enum):
    adam = "adam"
    adamw = "adamw"


class StepOrder(Enum):
    grouped = "grouped"
    interleaved = "interleaved"
    as_selected = "as_selected"


@dataclass
class EngineConfig:
    name: str = MISSING
    optimizer: Optimizer = Optimizer.adam
    lr: float = 5e-5
    eps: float = 1e-8
    weight_decay: float = 0.0
    max_grad_norm: Optional[float] = None  # None: no clipping
    refresh_interval: int = 2              # Gradient Reuse interval r; 1 = no reuse
    order: StepOrder = StepOrder.grouped
    batch_size: int = 1                    # micro-batch of multiset elements per optimizer step
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    seed: int = 0
    cuda_graphs: str = "auto"              # auto (on where CUDA is) | true | false; see hullft/engine/cuda_graphs.py
    bucket: int = 128                      # captured steps pad each sequence to the next multiple of this
    compile: str = "auto"                  # auto (bf16 CPU jobs whose steps pay for it) | true | false; hullft/engine/compiled.py


class Protocol(Enum):
    rolling = "rolling"
    first_window = "first_window"


class PrefixToken(Enum):
    eot = "eot"  # <|endoftext|> where the vocabulary has it, else as bos
    bos = "bos"  # lm-eval's HFLM rule: BOS, else EOS
    eos = "eos"


class ByteCount(Enum):
    scored = "scored"      # bytes of the scored tokens (first_window)
    document = "document"  # bytes of the whole document (rolling; the HullFT reference's first_window)


@dataclass
class EvalConfig:
    name: str = MISSING
    protocol: Protocol = Protocol.rolling
    window: int = 1024  # tokens per scoring window (rolling) or scored prefix (first_window)
    prefix_token: PrefixToken = PrefixToken.eot
    prefix: bool = True                    # first_window only: false = no prefix, first token unscored
    bytes: ByteCount = ByteCount.document  # first_window may count only the scored tokens' bytes


@dataclass
class LoggerConfig:
    name: str = MISSING
    wandb: bool = False
    project: str = "hullft"
    mode: str = "offline"  # offline | online | disabled
    group: str = ""        # default: the sweep directory name


@dataclass
class Config:
    model: ModelConfig = MISSING
    embedder: EmbedderConfig = MISSING
    data: DataConfig = MISSING
    engine: EngineConfig = MISSING
    eval: EvalConfig = MISSING
    logger: LoggerConfig = MISSING
    selector: Any = MISSING
    method: Any = MISSING
    budget: int = 4               # n: optimizer steps (multiset size) per query; the cap where alpha is set
    k: int = 200                  # faiss pre-selection size
    llambda: float = 0.2          # noise variance of the surrogate GP (sift, sift_exact, us and sigma)
    alpha: Optional[float] = None  # adaptive budget: the largest n <= budget with alpha * n * sigma_n <= 1
    checkpoints: List[int] = field(default_factory=list)  # extra n < budget scored in the same pass
    queries_per_domain: int = 1
    query_seed: int = 0
    shard: int = 0
    num_shards: int = 1
    worker: int = 0               # tells identical workers apart only: sweep it to start N of them on one directory
    tag: str = "run"


def output_dirname(overrides: str) -> str:
    """A directory name from Hydra's override string: no slashes, long ones shortened with a hash."""
    name = overrides.replace("/", "_") or "default"
    if len(name) > 150:
        name = f"{name[:120]}-{hashlib.sha1(name.encode()).hexdigest()[:10]}"
    return name


def register_configs() -> None:
    if not OmegaConf.has_resolver("dirname"):
        OmegaConf.register_new_resolver("dirname", output_dirname)
    cs = ConfigStore.instance()
    # group options are checked through Config's typed fields; no per-group schema is stored, so none
    # appears among a group's choices (model=model_schema)
    cs.store(name="config_schema", node=Config)
