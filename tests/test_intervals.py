"""The paired t interval keeps its coverage at small and large counts; Holm; `queries_needed` matches a simulation."""
import numpy as np
import pytest
from scipy import stats

from hullft.report.intervals import holm, p_value, queries_needed, stratified, summarize_difference, t_interval
from hullft.report.tables import paired_table
from tests.test_report import synthetic_records

DOMAINS = 9
OFFSETS = np.random.default_rng(10).normal(0, 2.0, DOMAINS)  # domains differ in how much an arm gains there
SPREADS = np.array([0.5, 1.0, 1.5, 2.0, 2.6, 3.0, 4.0, 1.0, 2.0])  # ... and in how much queries vary


def noise(rng, kind, size):
    if kind == "normal":
        return rng.normal(size=size)
    return rng.standard_t(3, size=size) / np.sqrt(3)  # heavy-tailed, unit variance


def coverage(per_domain, kind, trials=3000, seed=0):
    """Share of simulated query sets whose 95% interval holds the true mean difference."""
    rng = np.random.default_rng(seed)
    strata = np.repeat(np.arange(DOMAINS), per_domain)
    covered = 0
    for _ in range(trials):
        diff = OFFSETS[strata] + SPREADS[strata] * noise(rng, kind, len(strata))
        lo, hi = t_interval(stratified(diff, strata))
        covered += lo <= OFFSETS.mean() <= hi
    return covered / trials


@pytest.mark.parametrize("kind", ["normal", "t3"])
@pytest.mark.parametrize("per_domain", [2, 4, 23])
def test_the_interval_keeps_its_coverage_at_every_count(per_domain, kind):
    """The stratified percentile bootstrap it replaced covered 0.79 at 2 per domain and 0.90 at 4."""
    assert coverage(per_domain, kind) >= 0.94


def test_the_interval_is_the_stratified_t_interval_by_hand():
    rng = np.random.default_rng(1)
    strata = np.repeat([0, 1, 2], [3, 5, 8])
    diff = rng.normal(size=16) + strata
    parts = [diff[strata == h] for h in range(3)]
    terms = np.array([len(p) * p.var(ddof=1) / 16 ** 2 for p in parts])
    df = terms.sum() ** 2 / sum(t ** 2 / (len(p) - 1) for t, p in zip(terms, parts))
    half = stats.t.ppf(0.975, df) * np.sqrt(terms.sum())
    s = stratified(diff, strata)
    assert (s.se, s.df) == pytest.approx((np.sqrt(terms.sum()), df))
    assert t_interval(s) == pytest.approx((diff.mean() - half, diff.mean() + half))
    assert p_value(s) == pytest.approx(2 * stats.t.sf(abs(diff.mean()) / s.se, df))


def test_one_stratum_is_the_plain_t_test():
    diff = np.random.default_rng(2).normal(0.3, 1.0, size=12)
    s = stratified(diff, np.zeros(12))
    assert p_value(s) == pytest.approx(stats.ttest_1samp(diff, 0.0).pvalue)


def test_domains_of_one_query_are_pooled_and_counted():
    """One query per domain (the headline preset): pooled into one stratum, a plain t interval over them."""
    diff = 0.1 + np.random.default_rng(4).normal(0, 1.0, size=9)
    summary = summarize_difference(diff, np.array([f"domain{i}" for i in range(9)]))
    assert summary["lone_domains"] == 9 and summary["df"] == pytest.approx(8)
    assert summary["se"] == pytest.approx(diff.std(ddof=1) / 3)
    assert not summary["resolved"] and summary["queries_needed"] > 9


def test_a_single_lone_query_borrows_the_other_domains_variance():
    rng = np.random.default_rng(5)
    strata = np.array([0, 0, 0, 1, 1, 1, 2])
    diff = rng.normal(size=7)
    pooled = (diff[:3].var(ddof=1) * 2 + diff[3:6].var(ddof=1) * 2) / 4
    s = stratified(diff, strata)
    assert s.se ** 2 == pytest.approx((3 * diff[:3].var(ddof=1) + 3 * diff[3:6].var(ddof=1) + pooled) / 49)
    assert s.lone_domains == 1 and np.isfinite(s.df)


def test_equal_arms_are_never_resolved_and_a_constant_difference_is():
    assert summarize_difference(np.zeros(6), np.repeat([0, 1], 3))["resolved"] is False
    assert summarize_difference(np.full(6, 0.5), np.repeat([0, 1], 3))["resolved"] is True


def test_holm_against_its_definition():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan, 0.2])
    # sorted 0.005 (<= .05/5), 0.01 (<= .05/4), 0.03 (> .05/3: stop)
    assert holm(p).tolist() == [True, False, False, True, False, False]
    assert holm(np.array([0.01])).tolist() == [True] and not holm(np.array([np.nan])).any()


def resolved_share(rng, per_domain, true_diff, sd, trials=400):
    strata = np.repeat(np.arange(3), per_domain)
    hits = 0
    for _ in range(trials):
        diff = true_diff + rng.normal(0, sd, size=len(strata))
        hits += summarize_difference(diff, strata)["resolved"]
    return hits / trials


def test_queries_needed_is_within_20_percent_of_a_simulation():
    """Simulated experiments of 0.8x and 1.2x the figure resolve the difference less and more often than 80%."""
    true_diff, sd = 0.5, 2.6
    needed = queries_needed(true_diff, sd)
    assert 150 < needed < 300  # (2.80 * 2.6 / 0.5)^2 = 213
    rng = np.random.default_rng(2)
    assert resolved_share(rng, int(0.8 * needed / 3), true_diff, sd) < 0.8
    assert resolved_share(rng, int(1.2 * needed / 3), true_diff, sd) > 0.8


def test_se_interval_and_queries_needed_share_one_variance():
    diff = np.random.default_rng(6).normal(0.05, 2.0, size=30)
    strata = np.repeat(np.arange(3), 10)
    summary = summarize_difference(diff, strata)
    s = stratified(diff, strata)
    assert summary["se"] == s.se
    assert summary["ci_hi"] - summary["ci_lo"] == pytest.approx(2 * stats.t.ppf(0.975, s.df) * s.se)
    assert summary["queries_needed"] == queries_needed(diff.mean(), s.se * np.sqrt(30))


def test_paired_rows_carry_the_interval_holm_and_what_would_resolve_them():
    df = synthetic_records()
    paired = paired_table(df)
    row = paired.set_index(["domain", "a", "b"]).loc[("ALL", "hullft", "nn")]
    a = df[df.selector == "hullft"].set_index("query_id").bpb_pct
    b = df[df.selector == "nn"].set_index("query_id").bpb_pct
    diff = (a - b).loc[a.index]
    expected = summarize_difference(diff.values, np.array([q.split("-")[0] for q in diff.index]))
    assert (row.se, row.ci_lo, row.ci_hi, row.p) == pytest.approx(
        (expected["se"], expected["ci_lo"], expected["ci_hi"], expected["p"]))
    assert row.resolved == (row.ci_hi < 0 or row.ci_lo > 0)
    assert np.isnan(row.queries_needed) if row.resolved else row.queries_needed > row.queries
    assert paired.holm.tolist() == holm(paired.p.to_numpy()).tolist()
    assert not (paired.holm & ~paired.resolved).any()
