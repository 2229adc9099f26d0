"""Merge the records of runs, multiruns and shards into tables and a BPB%-vs-wall-clock Pareto plot.

    python -m hullft.report multirun/headline outputs/... --out results/report

Writes table.csv/.md (mean BPB% +- standard error per domain x selector x n), points.csv/.md
(one point per configuration: mean BPB% against mean wall-clock per query, Pareto front marked)
and pareto.png.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def load_records(paths: Iterable[str | Path]) -> pd.DataFrame:
    files = []
    for p in map(Path, paths):
        files += [p] if p.is_file() else sorted(p.rglob("records.parquet"))
    if not files:
        raise FileNotFoundError(f"no records.parquet under {[str(p) for p in paths]}; run `python run.py` first")
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    # the same query of the same config measured twice (a rerun copied elsewhere): keep one
    return df.drop_duplicates(["config_hash", "query_id"], keep="last").reset_index(drop=True)


def _se(x: pd.Series) -> float:
    return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def domain_table(records: pd.DataFrame) -> pd.DataFrame:
    keys = ["domain", "selector", "n"]
    overall = records.assign(domain="ALL")
    both = pd.concat([records, overall], ignore_index=True)
    return (both.groupby(keys).agg(bpb_pct=("bpb_pct", "mean"), se=("bpb_pct", _se), queries=("bpb_pct", "size"),
                                   t_total=("t_total", "mean"))
            .reset_index().sort_values(keys).reset_index(drop=True))


def pareto_mask(t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """True where no other point is at least as fast and as good, and strictly better in one."""
    t, y = np.asarray(t, float), np.asarray(y, float)
    dominated = ((t[None, :] <= t[:, None]) & (y[None, :] <= y[:, None])
                 & ((t[None, :] < t[:, None]) | (y[None, :] < y[:, None]))).any(1)
    return ~dominated


def summarize(records: pd.DataFrame) -> pd.DataFrame:
    """One point per configuration (shards merged): mean BPB% and mean wall-clock per query."""
    points = (records.groupby(["selector", "n", "refresh_interval", "config_hash"])
              .agg(bpb_pct=("bpb_pct", "mean"), se=("bpb_pct", _se), t_total=("t_total", "mean"),
                   t_select=("t_select", "mean"), t_finetune=("t_finetune", "mean"),
                   fwd_bwd=("fwd_bwd", "mean"), queries=("bpb_pct", "size"))
              .reset_index().sort_values(["selector", "t_total"]).reset_index(drop=True))
    points["pareto"] = pareto_mask(points.t_total.values, points.bpb_pct.values)
    return points


def pareto_plot(points: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, group in points.groupby("selector"):
        group = group.sort_values("t_total")
        ax.errorbar(group.t_total, group.bpb_pct, yerr=group.se.fillna(0), marker="o", capsize=3, label=name)
        for row in group.itertuples():
            ax.annotate(f"n={row.n}", (row.t_total, row.bpb_pct), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
    front = points[points.pareto].sort_values("t_total")
    ax.plot(front.t_total, front.bpb_pct, "k--", lw=1, alpha=0.6, label="Pareto front")
    ax.scatter(front.t_total, front.bpb_pct, s=140, facecolors="none", edgecolors="k")
    ax.set_xlabel("mean wall-clock per query (s): retrieve + select + finetune + score")
    ax.set_ylabel("BPB % of the base model (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(records: pd.DataFrame, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    table = domain_table(records)
    points = summarize(records)
    table.to_csv(out / "table.csv", index=False)
    points.to_csv(out / "points.csv", index=False)
    (out / "table.md").write_text(table.to_markdown(index=False, floatfmt=".2f") + "\n")
    (out / "points.md").write_text(points.drop(columns="config_hash").to_markdown(index=False, floatfmt=".3f") + "\n")
    pareto_plot(points, out / "pareto.png")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help="run/multirun directories or records.parquet files")
    ap.add_argument("--out", default="results/report", help="where to write the tables and plot")
    args = ap.parse_args(argv)
    try:
        records = load_records(args.paths)
    except FileNotFoundError as e:
        sys.exit(f"error: {e}")
    write_report(records, Path(args.out))
    print(summarize(records).drop(columns="config_hash").to_string(index=False))
    print(f"wrote {args.out}/table.md, points.md, pareto.png")


if __name__ == "__main__":
    main()
