"""Merge the records of runs, multiruns and shards into tables and a BPB%-vs-wall-clock Pareto plot.

    python -m hullft.report multirun/headline outputs/... --out results/report

Writes table.csv/.md, paired.csv/.md (its first line says how many comparisons it makes and how many stay
resolved under Holm's correction), points.csv/.md (tables.py says what each holds), pareto.png and, where an arm
has several budgets, anytime.png (plots.py) and equal_seconds.csv/.md (each point against every other arm read
at the same mean seconds per query: equal_seconds.py), and
sigma.csv/.md with sigma.png: how well the posterior sigma predicts the gain (sigma_gain.py).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, Tuple

import pandas as pd

from hullft.errors import one_line_errors
from hullft.report.equal_seconds import equal_seconds_table
from hullft.report.loading import load_records, with_settings
from hullft.report.plots import anytime_plot, offline_caption, pareto_plot
from hullft.report.sigma_gain import sigma_plot, sigma_table
from hullft.report.tables import domain_table, family_line, paired_table, summarize


def write_table(frame: pd.DataFrame, stem: Path, heading: str = "", shown: pd.DataFrame | None = None) -> None:
    """stem.csv (every column) and stem.md (`shown`, else the same, under `heading`)."""
    frame.to_csv(stem.with_suffix(".csv"), index=False)
    markdown = (frame if shown is None else shown).to_markdown(index=False, floatfmt=".3f")
    stem.with_suffix(".md").write_text(heading + markdown + "\n")


def write_paired(paired: pd.DataFrame, out: Path) -> None:
    write_table(paired, out / "paired", heading=family_line(paired) + ".\n\n")


def write_points(points: pd.DataFrame, out: Path) -> None:
    shown = points.drop(columns=["config_id"] + ([] if points.label.astype(bool).any() else ["label"]))
    write_table(points, out / "points", shown=shown)


def report_tables(records: pd.DataFrame) -> Dict[str, pd.DataFrame]:
    """Every table of the report, by the stem of its file (equal_seconds and sigma may be empty)."""
    return {"table": domain_table(records), "paired": paired_table(records), "points": summarize(records),
            "equal_seconds": equal_seconds_table(records), "sigma": sigma_table(with_settings(records))}


def write_report(records: pd.DataFrame, out: Path) -> Tuple[list, Dict[str, pd.DataFrame]]:
    """Writes the report's files into `out` (made first: one that cannot be written fails before the work);
    returns the names written and the tables."""
    out.mkdir(parents=True, exist_ok=True)
    tables = report_tables(records)
    points, equal, sigma = tables["points"], tables["equal_seconds"], tables["sigma"]
    write_table(tables["table"], out / "table")
    write_paired(tables["paired"], out)
    write_points(points, out)
    pareto_plot(points, out / "pareto.png")
    written = ["table.md", "paired.md", "points.md", "pareto.png"]
    if anytime_plot(points, out / "anytime.png"):
        written.append("anytime.png")
    if len(equal):
        write_table(equal, out / "equal_seconds", heading="Each point against every other arm at its mean seconds "
                    "per query (diff = a - b in BPB%; b a mixture of its two bracketing points, share w of the "
                    "second; stratified 95% t interval; holm over this table)\n\n")
        written.append("equal_seconds.md")
    if len(sigma):
        write_table(sigma, out / "sigma")
        sigma_plot(with_settings(records), out / "sigma.png")
        written += ["sigma.md", "sigma.png"]
    return written, tables


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help="run/multirun directories or records.parquet files")
    ap.add_argument("--out", default="results/report", help="where to write the tables and plot")
    args = ap.parse_args(argv)
    with one_line_errors():
        records = load_records(args.paths)
        written, tables = write_report(records, Path(args.out))
    overall = tables["table"].query("domain == 'ALL'").drop(columns="domain")
    print(overall.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    paired = tables["paired"]
    shown = paired.query("domain == 'ALL'").drop(columns="domain")
    if len(shown):
        print("\npaired, all domains (diff = a - b in BPB%, stratified 95% t interval; holm: resolved under Holm's "
              "correction over every row of paired.md; a_wins = share of queries where a is lower; queries_needed: "
              "to resolve an unresolved difference of its size with 80% power):")
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(family_line(paired))
    equal = tables["equal_seconds"]
    if len(equal):
        print("\nat equal seconds per query (b read at a's mean seconds between its two bracketing n; "
              "equal_seconds.md):")
        print(equal.drop(columns=["df", "queries_needed", "lone_domains"]).to_string(
            index=False, float_format=lambda v: f"{v:.3f}"))
    sigma = tables["sigma"]
    if len(sigma):
        print("\nsigma vs realised gain (Spearman rho, bootstrap 95% interval over queries):")
        print(sigma.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    points = tables["points"]
    caption = offline_caption(points)
    if caption:
        print(f"\none-time work, not in the per-query seconds: {caption}")
    mixed = points[points.steps.str.startswith("mixed")]
    for row in mixed.itertuples():
        print(f"\n{row.method} {row.selector} {row.setting} {row.label}".rstrip() + f": its records' steps ran "
              f"{row.steps[len('mixed: '):]}; its seconds mix both")
    print(f"\nwrote {args.out}/" + ", ".join(written))
