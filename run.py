"""Run TTFT jobs:  python run.py [group=option ...] [-m for sweeps]   (see README.md)."""
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("HULLFT_ROOT", str(ROOT))  # lets conf/config.yaml find sweeps/ and experiments/

from hullft.config import register_configs  # noqa: E402
from hullft.models import ModelNotAvailable  # noqa: E402
from hullft.runner import run_job  # noqa: E402

register_configs()


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    group = Path(hc.sweep.dir).name if hc.mode.name == "MULTIRUN" else ""
    try:
        records = run_job(cfg, out_dir, group=group, name=hc.job.override_dirname or cfg.tag)
    except (ValueError, FileNotFoundError, ModelNotAvailable, RuntimeError) as e:
        sys.exit(f"error: {e}")
    if len(records):
        print(f"{len(records)} queries, mean BPB% {records.bpb_pct.mean():.2f}, "
              f"mean wall-clock {records.t_total.mean():.2f} s/query -> {out_dir}/records.parquet")


if __name__ == "__main__":
    main()
