"""Run TTFT jobs:  python run.py [group=option ...] [-m for sweeps]   (see README.md)."""
import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("HULLFT_ROOT", str(ROOT))  # lets conf/config.yaml find sweeps/ and experiments/

from hullft.config import register_configs  # noqa: E402
from hullft.runner import run_job  # noqa: E402
from hullft.jobs import guarded, run_cli  # noqa: E402

register_configs()


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig):
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    group = Path(hc.sweep.dir).name if hc.mode.name == "MULTIRUN" else ""
    records = guarded(lambda: run_job(cfg, out_dir, group=group, name=hc.job.override_dirname or cfg.tag,
                                      overrides=list(hc.overrides.task)))
    if isinstance(records, dict):
        return records  # a failed job of a sweep
    if len(records):
        print(f"{len(records)} queries, mean BPB% {records.bpb_pct.mean():.2f}, "
              f"mean wall-clock {records.t_total.mean():.2f} s/query -> {out_dir}/records.parquet")


if __name__ == "__main__":
    run_cli(main)
