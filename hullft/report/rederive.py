"""New intervals for a report whose records are gone: the per-domain rows of its paired table hold all the
stratified t interval needs (each domain's queries, mean difference and standard error; a domain of one query: its
difference), and those of its domain table all a stratified standard error of a mean BPB% needs.

    python -m hullft.report.rederive results/methods    # rewrites paired.*, and table.*/points.* se, there

Each domain's differences are stood in for by values of the same count, mean and sample variance, which give the
same stratified mean, standard error, degrees of freedom, interval and p-value (tests/test_rederive.py checks it
against the table computed from the records); Holm's correction is read over the rederived rows.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from hullft.errors import UserError, one_line_errors
from hullft.report.cli import write_paired, write_points, write_table
from hullft.report.intervals import holm, stratified, summarize_difference
from hullft.report.tables import PAIRED_COLUMNS, family_line

KEYS = ["setting", "a", "b"]
ARM = ["method", "selector", "label", "setting"]


def stand_ins(queries: int, mean: float, se: float) -> np.ndarray:
    """`queries` values with exactly this mean and standard error of the mean."""
    if queries == 1:
        return np.array([mean])
    shape = np.arange(queries, dtype=float)
    shape = (shape - shape.mean()) / shape.std(ddof=1)
    return mean + (0.0 if not np.isfinite(se) else se * np.sqrt(queries)) * shape


def _stand_in_sample(parts: pd.DataFrame, value: str) -> tuple:
    values = [stand_ins(int(p.queries), getattr(p, value), p.se) for p in parts.itertuples()]
    strata = np.concatenate([[p.domain] * int(p.queries) for p in parts.itertuples()])
    return np.concatenate(values), strata


def rederive_se(table: pd.DataFrame) -> pd.DataFrame:
    """A domain table with its all-domain rows' se stratified, from its per-domain rows."""
    table = table.assign(label=table["label"].astype("string").fillna("") if "label" in table else "")
    domains = table[table.domain != "ALL"].set_index(ARM)
    se = []
    for row in table.itertuples():
        if row.domain != "ALL":
            se.append(row.se)
            continue
        values, strata = _stand_in_sample(domains.loc[[tuple(getattr(row, k) for k in ARM)]], "bpb_pct")
        se.append(stratified(values, strata).se)
    return table.assign(se=se)


def rederive(paired: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("domain", *KEYS, "queries", "diff_pct", "se") if c not in paired]
    if missing:
        raise UserError(f"not a paired table of this harness (no {', '.join(missing)} column)")
    domains = paired[paired.domain != "ALL"].set_index(KEYS)
    rows = []
    for row in paired.to_dict("records"):
        parts = domains.loc[[tuple(row[k] for k in KEYS)]] if row["domain"] == "ALL" else pd.DataFrame([row])
        diff, strata = _stand_in_sample(parts, "diff_pct")
        if len(diff) != row["queries"]:
            raise UserError(f"{row['domain']} {row['setting']} {row['a']} - {row['b']}: its domains' rows hold "
                            f"{len(diff)} queries, not {row['queries']}; this table cannot be rederived")
        rows.append({**row, **summarize_difference(diff, strata)})
    table = pd.DataFrame(rows)
    table["holm"] = holm(table.p.to_numpy(float))
    return table[[c for c in PAIRED_COLUMNS if c in table]]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="a report folder holding paired.csv")
    folder = Path(ap.parse_args(argv).folder)
    with one_line_errors():
        if not (folder / "paired.csv").exists():
            raise UserError(f"{folder}/paired.csv does not exist; give a folder written by python -m hullft.report")
        table = rederive(pd.read_csv(folder / "paired.csv"))
    write_paired(table, folder)
    domain = rederive_se(pd.read_csv(folder / "table.csv"))
    write_table(domain if domain.label.astype(bool).any() else domain.drop(columns="label"), folder / "table")
    points = pd.read_csv(folder / "points.csv")
    points = points.assign(label=points["label"].astype("string").fillna("") if "label" in points else "")
    overall = domain[domain.domain == "ALL"].set_index(ARM).se
    alone = ~points.duplicated(ARM, keep=False)  # a point that is its arm's only one: the table's all-domain row
    points["se"] = [overall.get(tuple(getattr(p, k) for k in ARM), p.se) if one else p.se
                    for p, one in zip(points.itertuples(), alone)]
    write_points(points, folder)
    print(f"{family_line(table)}; wrote {folder}/paired.*, and the stratified se into table.* and points.*")



if __name__ == "__main__":
    main()
