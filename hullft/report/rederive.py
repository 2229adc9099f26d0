"""New intervals for a paired table whose records are gone: its per-domain rows hold all the stratified t
interval needs (each domain's queries, mean difference and standard error; a domain of one query: its difference).

    python -m hullft.report.rederive results/methods    # rewrites paired.csv and paired.md there

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
from hullft.report.intervals import holm, summarize_difference
from hullft.report.tables import PAIRED_COLUMNS, family_line

KEYS = ["setting", "a", "b"]


def stand_ins(queries: int, mean: float, se: float) -> np.ndarray:
    """`queries` values with exactly this mean and standard error of the mean."""
    if queries == 1:
        return np.array([mean])
    shape = np.arange(queries, dtype=float)
    shape = (shape - shape.mean()) / shape.std(ddof=1)
    return mean + (0.0 if not np.isfinite(se) else se * np.sqrt(queries)) * shape


def rederive(paired: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("domain", *KEYS, "queries", "diff_pct", "se") if c not in paired]
    if missing:
        raise UserError(f"not a paired table of this harness (no {', '.join(missing)} column)")
    domains = paired[paired.domain != "ALL"].set_index(KEYS)
    rows = []
    for row in paired.to_dict("records"):
        parts = domains.loc[[tuple(row[k] for k in KEYS)]] if row["domain"] == "ALL" else pd.DataFrame([row])
        values = [stand_ins(int(p.queries), p.diff_pct, p.se) for p in parts.itertuples()]
        strata = np.concatenate([[p.domain] * int(p.queries) for p in parts.itertuples()])
        diff = np.concatenate(values)
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
    table.to_csv(folder / "paired.csv", index=False)
    (folder / "paired.md").write_text(family_line(table) + ".\n\n" + table.to_markdown(index=False, floatfmt=".3f")
                                      + "\n")
    print(f"{family_line(table)}; wrote {folder}/paired.csv and paired.md")


if __name__ == "__main__":
    main()
