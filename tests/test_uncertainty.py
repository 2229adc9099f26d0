"""SIFT's surrogate as a first-class signal: uncertainty sampling, sigma, adaptive budgets, sigma-vs-gain."""
import numpy as np
import pytest
from scipy.stats import spearmanr

from baselines.sift import SIFT
from baselines.us import UncertaintySampling
from hullft.selection.adaptive import largest_within, select_adaptive
from hullft.compose import compose_config
from hullft.selection.posterior import posterior_sigma, posterior_variances
from hullft.runner import run_job
from hullft.selection.hullft import HullFT
from hullft.report.sigma_gain import rho_with_interval, spearman

LAMBDA = 0.2


def unit_rows(rng, k, d):
    x = rng.normal(size=(k, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def explicit_variance(x, rows, llambda):
    """k(x,x) - k_S(x)^T (K_SS + lambda I)^-1 k_S(x), straight from the definition."""
    x, rows = np.asarray(x, np.float64), np.asarray(rows, np.float64)
    if len(rows) == 0:
        return float(x @ x)
    k = rows @ x
    return float(x @ x - k @ np.linalg.solve(rows @ rows.T + llambda * np.eye(len(rows)), k))


def test_posterior_variances_equal_the_definition_for_every_prefix_with_repeats():
    rng = np.random.default_rng(0)
    X, q = unit_rows(rng, 12, 8), unit_rows(rng, 1, 8)[0]
    order = [3, 5, 3, 7, 7, 7, 0, 11]
    got = posterior_variances(q, X[order], LAMBDA)
    want = [explicit_variance(q, X[order[:m]], LAMBDA) for m in range(len(order) + 1)]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert posterior_sigma(q, X[order[::-1]], LAMBDA) == pytest.approx(np.sqrt(want[-1]), rel=1e-10)


@pytest.mark.parametrize("seed", range(5))
def test_uncertainty_sampling_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    X, q = unit_rows(rng, 40, 6), unit_rows(rng, 1, 6)[0]
    n = 15
    picks = []
    for _ in range(n):
        variance = np.array([explicit_variance(x, X[picks], LAMBDA) for x in X])
        tied = np.flatnonzero(variance >= variance.max() - 1e-6)
        picks.append(int(tied[np.argmax(X[tied] @ q)]))
    got = UncertaintySampling(LAMBDA).select(q, X, n)
    assert got.ordered_rows().tolist() == picks
    assert picks[0] == int(np.argmax(X @ q))  # unit rows tie on variance: the nearest goes first


def test_sigma_of_sift_is_sqrt_minus_activefts_value_for_every_prefix():
    rng = np.random.default_rng(1)
    X, q = unit_rows(rng, 80, 16), unit_rows(rng, 1, 16)[0]
    values, picks = SIFT(LAMBDA, device="cpu").search(q, X, 12)
    sigmas = np.sqrt(posterior_variances(q, X[picks], LAMBDA))[1:]
    np.testing.assert_allclose(sigmas, np.sqrt(-values), rtol=1e-5)


@pytest.mark.parametrize("alpha", [0.3, 1.0, 1.5, 3.0])
def test_adaptive_sift_keeps_activefts_picks_truncated_by_the_rule(alpha):
    rng = np.random.default_rng(2)
    X, q = unit_rows(rng, 80, 16), unit_rows(rng, 1, 16)[0]
    sift = SIFT(LAMBDA, device="cpu")
    values, picks = sift.search(q, X, 10)
    sigma = np.sqrt(-values)                               # activeft's own sigma_m, m = 1..10
    keep = max([0] + [m for m in range(1, 11) if alpha * m * sigma[m - 1] <= 1])
    chosen, seconds = select_adaptive(sift, q, X, 10, alpha, LAMBDA)
    assert seconds > 0
    if keep == 0:
        assert chosen is None
    else:
        assert chosen.ordered_rows().tolist() == picks[:keep].tolist()


def test_adaptive_hullft_takes_the_largest_size_that_meets_the_rule():
    rng = np.random.default_rng(3)
    X, q = unit_rows(rng, 60, 10), unit_rows(rng, 1, 10)[0]
    hullft = HullFT()
    sigmas = [1.0] + [np.sqrt(explicit_variance(q, X[hullft.select(q, X, m).ordered_rows()], LAMBDA))
                      for m in range(1, 9)]
    for alpha in (0.2, 0.5, 1.0, 2.0):
        ok = [m for m in range(9) if alpha * m * sigmas[m] <= 1 + 1e-12]
        chosen, _ = select_adaptive(hullft, q, X, 8, alpha, LAMBDA)
        assert (0 if chosen is None else chosen.size) == max(ok)
    assert largest_within([1.0, 0.9, 0.2, 0.3], 2.0) == 2  # not monotone: the largest m that passes


def test_spearman_and_its_bootstrap_interval():
    rng = np.random.default_rng(4)
    x = rng.normal(size=40)
    y = x + rng.normal(size=40)
    y[:5] = y[5]  # ties
    assert float(spearman(x, y)) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    rho, low, high = rho_with_interval(x, y)
    assert low < rho < high and -1 <= low and high <= 1


def test_a_job_records_sigma_budget_alpha_and_runs_no_step_where_the_rule_says_so(tmp_path, tiny_overrides):
    base = [*tiny_overrides, "queries_per_domain=1", "k=20"]
    fixed = run_job(compose_config([*base, "selector=us", "budget=3"]), tmp_path / "us")
    assert (fixed.n == 3).all() and (fixed.budget == 3).all() and fixed.alpha.isna().all()
    assert fixed.sigma.between(0, 1).all() and (fixed.selector == "us").all()
    none = run_job(compose_config([*base, "selector=sift_exact", "budget=4", "alpha=100"]), tmp_path / "a100")
    assert (none.n == 0).all() and (none.fwd_bwd == 0).all() and (none.alpha == 100).all()
    np.testing.assert_array_equal(none.bpb, none.bpb_base)
    assert np.allclose(none.sigma, 1.0, atol=1e-6)  # nothing observed: the prior
    full = run_job(compose_config([*base, "selector=sift_exact", "budget=4", "alpha=0.01"]), tmp_path / "a001")
    assert (full.n == 4).all() and (full.budget == 4).all() and (full.fwd_bwd > 0).all()
