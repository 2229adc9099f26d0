"""Compose the run config outside @hydra.main (CLIs, benchmarks, tests) with the same schema and overrides."""
from __future__ import annotations

import os
from typing import Sequence

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from hullft.cache import REPO_ROOT
from hullft.config import register_configs


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    os.environ.setdefault("HULLFT_ROOT", str(REPO_ROOT))
    register_configs()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))
