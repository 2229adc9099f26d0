"""Run TTFT jobs:  python run.py [group=option ...] [-m for sweeps]   (see README.md)."""
import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("HULLFT_ROOT", str(ROOT))  # lets conf/config.yaml find sweeps/ and experiments/

from hullft.config import register_configs  # noqa: E402
from hullft.errors import one_line_errors, user_message  # noqa: E402
from hullft.runner import run_job  # noqa: E402
from hullft.sweep_failures import FAILED, remove_if_empty  # noqa: E402

register_configs()
log = logging.getLogger("run")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig):
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode.name == "MULTIRUN"
    group = Path(hc.sweep.dir).name if multirun else ""
    try:
        records = run_job(cfg, out_dir, group=group, name=hc.job.override_dirname or cfg.tag,
                          overrides=list(hc.overrides.task))
    except Exception as e:  # noqa: BLE001 - a user error is one line; in a sweep any failure is recorded
        remove_if_empty(out_dir)  # Hydra made the directory; a refused job leaves none behind
        if not multirun:
            raise
        line = user_message(e)
        if line is None:
            log.exception("job %s failed", hc.job.override_dirname)
        line = line or f"{type(e).__name__}: {e}"
        print("\n".join(f"error: {part}" for part in line.splitlines()), file=sys.stderr)
        return {FAILED: line}  # the sweep goes on; hullft.sweep_failures sums the failures up at its end
    if len(records):
        print(f"{len(records)} queries, mean BPB% {records.bpb_pct.mean():.2f}, "
              f"mean wall-clock {records.t_total.mean():.2f} s/query -> {out_dir}/records.parquet")


if __name__ == "__main__":
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # Hydra's own errors reach one_line_errors, not a traceback
    with one_line_errors():
        main()
