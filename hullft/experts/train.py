"""One expert: the shared engine with LoRA (`method.experts.rank`, `alpha`, `lr`; the job's engine otherwise) takes
one optimizer step per sequence of a seeded sample of its cluster, and the adapter is saved in PEFT's layout
(`adapter_config.json`, `adapter_model.safetensors`), so `peft` and `ttmerge` load it as it is.

Every expert starts from the same LoRA initialisation (seeded; the engine's reset restores it bit for bit), so an
expert is the same bytes whichever process trains it and in whichever order.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import safetensors.torch
import torch
from omegaconf import OmegaConf

from hullft.data.files import save_json
from hullft.engine.finetune import FinetuneEngine
from hullft.experts.settings import ExpertSettings
from hullft.flops import forward_flops


def expert_engine_config(engine_cfg, settings: ExpertSettings):
    """The job's engine settings with LoRA at the experts' rank, alpha and learning rate, eager (a few dozen steps
    per expert do not pay for a compile)."""
    return OmegaConf.merge(engine_cfg, {"lora": True, "lora_r": settings.rank, "lora_alpha": settings.alpha,
                                        "lr": settings.lr, "compile": "false", "seed": settings.seed})


def expert_engine(loaded, engine_cfg, settings: ExpertSettings) -> FinetuneEngine:
    torch.manual_seed(settings.seed)  # LoRA's initialisation of A
    return FinetuneEngine(loaded, expert_engine_config(engine_cfg, settings))


def sample_rows(members: np.ndarray, settings: ExpertSettings, expert: int) -> np.ndarray:
    """`steps` rows of the cluster, seeded per expert: without repeats where the cluster has enough."""
    rng = np.random.default_rng([settings.seed, expert])
    return rng.choice(members, settings.steps, replace=len(members) < settings.steps)


def adapter_state(engine: FinetuneEngine) -> Dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().float().contiguous().cpu() for k, v in get_peft_model_state_dict(engine.model).items()}


def _in_one_order(path: Path) -> None:
    """PEFT writes "all-linear"'s target modules from a set, in an order that changes with the process's hash
    seed: sorted, an expert is the same bytes from every process."""
    config = json.loads(path.read_text())
    config = {k: sorted(v) if isinstance(v, list) and all(isinstance(x, str) for x in v) else v
              for k, v in config.items()}
    path.write_text(json.dumps(config, indent=2, sort_keys=True))


def train_expert(engine: FinetuneEngine, sequences: List[List[int]], max_length: int, path: Path) -> Dict:
    """Train from the initialisation, save into `path` (a directory, made whole or not at all); its cost."""
    engine.reset()
    cpu, start = time.process_time(), time.perf_counter()
    result = engine.finetune(sequences, [1] * len(sequences), max_length=max_length)
    cost = {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
            "flops": 3 * forward_flops(engine.model, result.tokens, result.token_pairs), "steps": result.opt_steps,
            "tokens": result.tokens, "diverged": result.diverged, "mean_loss": result.mean_loss}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        safetensors.torch.save_file(adapter_state(engine), str(tmp / "adapter_model.safetensors"))
        engine.model.peft_config["default"].save_pretrained(str(tmp))
        _in_one_order(tmp / "adapter_config.json")
        save_json(cost, tmp / "cost.json")
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, path)
        except OSError:  # another process finished the same expert first: the same bytes
            if not (path / "cost.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    engine.reset()
    return cost
