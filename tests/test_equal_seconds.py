"""Arms read at equal seconds per query (hullft/report/equal_seconds.py), against a hand computation."""
import numpy as np
import pandas as pd
import pytest

from hullft.report.equal_seconds import equal_seconds_table
from hullft.report.intervals import summarize_difference

DOMAINS = ["code", "law", "mail"]


def records(rng):
    """nn at n = 8 and 16 (10 s and 20 s a query), hullft at n = 8 (15 s) and 50 (60 s), the base model (2 s)."""
    rows, truth = [], {}
    for d in DOMAINS:
        for q in range(4):
            qid = f"{d}{q}"
            values = {("nn", 8): 95 + rng.normal(), ("nn", 16): 92 + rng.normal(),
                      ("hullft", 8): 93 + rng.normal(), ("hullft", 50): 90 + rng.normal(), ("none", 0): 100.0}
            seconds = {("nn", 8): 10, ("nn", 16): 20, ("hullft", 8): 15, ("hullft", 50): 60, ("none", 0): 2}
            for (selector, n), value in values.items():
                method = "none" if selector == "none" else "finetune"
                rows.append({"query_id": qid, "domain": d, "method": method,
                             "selector": "none" if method == "none" else selector, "n": n, "bpb_pct": value,
                             "t_total": seconds[selector, n] + rng.uniform(-0.5, 0.5) * (q - 1.5) / 1.5})
            truth[d, qid] = values
    return pd.DataFrame(rows), truth


def test_a_point_is_compared_with_the_mixture_of_the_other_arm_at_its_seconds():
    df, truth = records(np.random.default_rng(0))
    table = equal_seconds_table(df).set_index(["a", "a_n", "b"])
    t_hullft = df[(df.selector == "hullft") & (df.n == 8)].t_total.mean()
    t8, t16 = (df[(df.selector == "nn") & (df.n == n)].t_total.mean() for n in (8, 16))
    w = (t_hullft - t8) / (t16 - t8)
    row = table.loc["hullft", 8, "nn"]
    assert row.b_between == "n=8..16" and row.w == pytest.approx(w) and row.seconds == pytest.approx(t_hullft)
    keys = sorted(truth)
    diff = np.array([truth[k]["hullft", 8] - ((1 - w) * truth[k]["nn", 8] + w * truth[k]["nn", 16]) for k in keys])
    expected = summarize_difference(diff, np.array([d for d, _ in keys]))
    assert row.diff_pct == pytest.approx(diff.mean()) and row.queries == 12
    for key in ("se", "ci_lo", "ci_hi", "p"):
        assert row[key] == pytest.approx(expected[key])
    # nn's n=8 (10 s) lies between the base model (2 s) and hullft's n=8 (15 s): hullft's curve starts at n=0
    start = table.loc["nn", 8, "hullft"]
    assert start.b_between == "n=0..8"
    # hullft at 60 s lies beyond nn's last point (20 s): no row, nothing extrapolated
    assert ("hullft", 50, "nn") not in table.index


def test_a_single_point_per_arm_and_no_base_model_means_no_table():
    df, _ = records(np.random.default_rng(1))
    assert equal_seconds_table(df[df.n == 8]).empty
    # from the base model: nn's n=8 (10 s) falls on hullft's curve (2..15 s), hullft's (15 s) beyond nn's (2..10 s)
    assert equal_seconds_table(df[df.n.isin([0, 8])])[["a", "b"]].values.tolist() == [["nn", "hullft"]]
