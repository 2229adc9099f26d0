"""Arms compared at equal seconds per query, where paired.md compares them at equal n.

The question the harness answers is which selection gives the lower BPB% for the same wall-clock. For each
fixed-n point of an arm a, with mean seconds per query T, every other arm b whose points bracket T is read at T:
between its two points n1 < n2 with mean seconds t1 <= T <= t2, b at T is the mixture that runs n2 on a share
w = (T - t1) / (t2 - t1) of the queries and n1 on the rest. That mixture is a real procedure with exactly T mean
seconds, and its expected BPB% on query q is (1 - w) b_q(n1) + w b_q(n2); its difference with a_q, query by
query (the queries a, n1 and n2 all scored), gets the stratified interval of intervals.py. The base model (the
`none` arm, n = 0) starts every arm's curve where the report holds it. Over all domains only; `holm` is read over
this table's rows.
"""
from __future__ import annotations

import pandas as pd

from hullft.report.intervals import holm, summarize_difference
from hullft.report.loading import with_settings
from hullft.report.tables import arm

COLUMNS = ["a", "a_n", "seconds", "b", "b_between", "w", "queries", "diff_pct", "se", "df", "ci_lo", "ci_hi", "p",
           "resolved", "holm", "queries_needed", "lone_domains"]


def _curves(records: pd.DataFrame) -> tuple:
    """Per-query BPB% by (arm, n), mean seconds by (arm, n), and each arm's points ordered by n (the base model's
    n = 0 first, where present)."""
    fixed = with_settings(records)
    fixed = fixed[~fixed.setting.str.startswith("alpha")].assign(arm=arm)
    per_query = fixed.pivot_table(index=["domain", "query_id"], columns=["arm", "n"], values="bpb_pct",
                                  aggfunc="mean")
    seconds = fixed.groupby(["arm", "n"]).t_total.mean()
    base = fixed[fixed.anchor & (fixed.method == "none")]
    start = [(base.arm.iloc[0], 0)] if len(base) else []
    points = {name: start + [(name, n) for n in sorted(group.n.unique())]
              for name, group in fixed[~fixed.anchor].groupby("arm")}
    return per_query, seconds, points


def _bracket(curve: list, seconds: pd.Series, t: float):
    """The consecutive points of a curve whose mean seconds bracket t, and the mixture's share of the second."""
    for first, second in zip(curve, curve[1:]):
        t1, t2 = seconds[first], seconds[second]
        if t1 <= t <= t2 and t2 > t1:
            return first, second, (t - t1) / (t2 - t1)
    return None


def equal_seconds_table(records: pd.DataFrame) -> pd.DataFrame:
    per_query, seconds, points = _curves(records)
    rows = []
    for a, curve in points.items():
        for point in curve:
            if point[0] != a:
                continue  # the base model's start of a's curve
            t = seconds[point]
            for b, other in points.items():
                found = None if b == a else _bracket(other, seconds, t)
                if found is None:
                    continue
                low, high, w = found
                both = per_query[[point, low, high]].dropna()
                if both.empty:
                    continue
                diff = both[point] - ((1 - w) * both[low] + w * both[high])
                rows.append({"a": a, "a_n": int(point[1]), "seconds": t, "b": b,
                             "b_between": f"n={low[1]:g}..{high[1]:g}", "w": w, "queries": len(diff),
                             "diff_pct": diff.mean(),
                             **summarize_difference(diff.to_numpy(), diff.index.get_level_values("domain"))})
    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "holm"])
    table.insert(COLUMNS.index("holm"), "holm", holm(table.p.to_numpy(float)))
    return table
