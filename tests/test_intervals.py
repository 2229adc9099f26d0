"""The paired bootstrap interval covers at its nominal rate; `queries_needed` matches a simulation's."""
import numpy as np
import pytest

from hullft.report.intervals import bootstrap_interval, queries_needed, summarize_difference, within_stratum_sd
from hullft.report.tables import paired_table
from tests.test_report import synthetic_records

OFFSETS = np.array([-1.5, 0.0, 2.0])  # domains differ in how much a selector gains there


def paired_sample(rng, per_stratum, true_diff, sd):
    strata = np.repeat(np.arange(len(OFFSETS)), per_stratum)
    return true_diff + OFFSETS[strata] + rng.normal(0, sd, size=len(strata)), strata


def test_the_interval_covers_the_true_difference_at_about_95_percent():
    rng = np.random.default_rng(0)
    truth = 0.4 + OFFSETS.mean()  # equal strata: the population mean
    covered = 0
    for trial in range(400):
        diff, strata = paired_sample(rng, 20, 0.4, 2.6)
        lo, hi = bootstrap_interval(diff, strata, reps=1000, seed=trial)
        covered += lo <= truth <= hi
    assert 0.91 <= covered / 400 <= 0.98


def test_the_interval_is_seeded_and_narrows_with_more_queries():
    rng = np.random.default_rng(1)
    diff, strata = paired_sample(rng, 40, 1.0, 2.0)
    assert bootstrap_interval(diff, strata) == bootstrap_interval(diff, strata)
    lo, hi = bootstrap_interval(diff[::4], strata[::4])
    lo_all, hi_all = bootstrap_interval(diff, strata)
    assert hi_all - lo_all < hi - lo


def resolved_share(rng, per_stratum, true_diff, sd, trials=400):
    hits = 0
    for trial in range(trials):
        diff, strata = paired_sample(rng, per_stratum, true_diff, sd)
        lo, hi = bootstrap_interval(diff - OFFSETS.mean(), strata, reps=400, seed=trial)
        hits += lo > 0 or hi < 0
    return hits / trials


def test_queries_needed_is_within_20_percent_of_a_simulation():
    """Simulated experiments of 0.8x and 1.2x the figure resolve the difference less and more often than 80%."""
    true_diff, sd = 0.5, 2.6
    needed = queries_needed(true_diff, sd)
    assert 150 < needed < 300  # (2.80 * 2.6 / 0.5)^2 = 213
    rng = np.random.default_rng(2)
    fewer = resolved_share(rng, int(0.8 * needed / 3), true_diff, sd)
    more = resolved_share(rng, int(1.2 * needed / 3), true_diff, sd)
    assert fewer < 0.8 < more


def test_within_stratum_sd_ignores_the_strata_offsets():
    rng = np.random.default_rng(3)
    diff, strata = paired_sample(rng, 500, 0.0, 1.0)
    assert within_stratum_sd(diff, strata) == pytest.approx(1.0, rel=0.05)
    assert np.std(diff) > 1.3  # the plain s.d. also counts the offsets


def test_paired_rows_carry_the_interval_and_what_would_resolve_them():
    df = synthetic_records()
    paired = paired_table(df).set_index(["domain", "a", "b"])
    a = df[df.selector == "hullft"].set_index("query_id").bpb_pct
    b = df[df.selector == "nn"].set_index("query_id").bpb_pct
    diff = (a - b).loc[a.index]
    row = paired.loc[("ALL", "hullft", "nn")]
    strata = [q.split("-")[0] for q in diff.index]
    expected = summarize_difference(diff.values, np.array(strata))
    assert (row.ci_lo, row.ci_hi) == pytest.approx((expected["ci_lo"], expected["ci_hi"]))
    assert row.ci_lo <= row.diff_pct <= row.ci_hi
    assert row.resolved == (row.ci_hi < 0 or row.ci_lo > 0)
    assert np.isnan(row.queries_needed) if row.resolved else row.queries_needed > row.queries


def test_domains_of_one_query_are_resampled_together():
    """One query per domain (the headline preset): stratifying each alone would resample nothing."""
    rng = np.random.default_rng(4)
    diff = 0.1 + rng.normal(0, 1.0, size=9)
    domains = np.array([f"domain{i}" for i in range(9)])
    lo, hi = bootstrap_interval(diff, domains)
    assert lo < diff.mean() < hi and (lo, hi) == bootstrap_interval(diff, np.zeros(9))
    summary = summarize_difference(diff, domains)
    assert not summary["resolved"] and summary["queries_needed"] > 9
    assert within_stratum_sd(diff, domains) == pytest.approx(np.std(diff, ddof=1))


def test_a_lone_query_joins_the_other_lone_queries_not_a_full_domain():
    diff, strata = paired_sample(np.random.default_rng(5), 10, 0.5, 1.0)
    with_lone = np.concatenate([diff, [3.0, -3.0]])
    lone_strata = np.concatenate([strata.astype(str), ["x", "y"]])
    pooled = np.concatenate([strata.astype(str), ["!lone", "!lone"]])  # sorted first, as the merged lone ones are
    assert bootstrap_interval(with_lone, lone_strata) == bootstrap_interval(with_lone, pooled)
