"""Experiment loggers: none, or Weights & Biases (offline by default, run files inside the job's output dir)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

import pandas as pd

from hullft.config import LoggerConfig
from hullft.report.configurations import config_id

WANDB_METRICS = ["bpb", "bpb_base", "bpb_pct", "t_retrieve", "t_select", "t_finetune", "t_eval", "t_total",
                 "fwd_bwd", "distinct"]


class NullLogger:
    def log_query(self, record: Dict) -> None:
        pass

    def finish(self, records: pd.DataFrame, out_dir: Path) -> None:
        pass


class WandbLogger:
    def __init__(self, cfg: LoggerConfig, run_config: Dict, out_dir: Path, group: str, name: str):
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        self.wandb, self.run_config = wandb, run_config
        self.step = 0
        # named by the job's overrides (what it changes from the defaults); config_id groups the runs of one
        # configuration (shards, workers, resumed runs) as the report merges them
        self.run = wandb.init(project=cfg.project, mode=cfg.mode, dir=str(out_dir), group=cfg.group or group,
                              name=name, config={**run_config, "config_id": config_id(run_config)},
                              reinit="finish_previous")
        self.run.define_metric("bpb_pct", step_metric="query")

    def log_query(self, record: Dict) -> None:
        self.step += 1
        self.run.log({"query": self.step, **{k: record[k] for k in WANDB_METRICS if k in record}})

    def finish(self, records: pd.DataFrame, out_dir: Path) -> None:
        from hullft.report.plots import pareto_plot
        from hullft.report.tables import summarize

        self.run.summary.update({"config_id": config_id(self.run_config)})
        if len(records):
            points = summarize(records)
            self.run.summary.update({"bpb_pct_mean": float(records.bpb_pct.mean()),
                                     "t_total_mean": float(records.t_total.mean()), "queries": len(records)})
            png = pareto_plot(points, Path(out_dir) / "pareto.png")
            self.run.log({"records": self.wandb.Table(dataframe=records.astype({"diverged": int})),
                          "pareto": self.wandb.Image(str(png)),
                          "bpb_vs_wallclock": self.wandb.Table(dataframe=points)})
        self.run.finish()


def make_logger(cfg: LoggerConfig, run_config: Dict, out_dir: Path, group: str, name: str):
    return WandbLogger(cfg, run_config, out_dir, group, name) if cfg.wandb else NullLogger()
