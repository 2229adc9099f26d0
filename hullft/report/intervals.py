"""How sure a paired difference is: a seeded bootstrap interval over queries, and the queries that would settle it.

A paired difference (arm a's BPB% minus arm b's, query by query) is resampled with replacement within each domain
(stratified: every resample keeps each domain's number of queries, as the query set does), and the 2.5th and
97.5th percentiles of the resampled means are its 95% interval. A difference is *resolved* when that interval
excludes zero. A domain with a single query has nothing to resample within it: such domains are resampled together,
as one stratum (the headline preset holds one query per domain; stratifying each alone would give every difference
an interval of width zero).

For one that is not, `queries_needed` is about how many queries (spread over the domains as now) would resolve a
difference of the observed size at the observed spread with probability `POWER` (0.8): the n with
|mean| = (z_0.975 + z_0.8) * sd / sqrt(n), where sd is the s.d. of one query's difference around its domain's
mean (the stratified bootstrap's spread). E.g. 0.3 points at an s.d. of 2.6: ~590 queries (~290 for a coin
flip's chance).
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np
from scipy.stats import norm

LEVEL = 0.95
POWER = 0.8
REPS = 2000
SEED = 0


def pooled_strata(strata: np.ndarray) -> np.ndarray:
    """Integer strata, with every stratum of a single query merged into one (-1)."""
    codes = np.unique(np.asarray(strata), return_inverse=True)[1].ravel()
    return np.where(np.bincount(codes)[codes] < 2, -1, codes)


def bootstrap_interval(diff: np.ndarray, strata: np.ndarray, reps: int = REPS, seed: int = SEED,
                       level: float = LEVEL) -> Tuple[float, float]:
    """The percentile interval of the mean of `diff`, resampling queries within each stratum (domain)."""
    diff, strata = np.asarray(diff, float), pooled_strata(strata)
    if len(diff) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    sums = np.zeros(reps)
    for stratum in np.unique(strata):
        values = diff[strata == stratum]
        sums += values[rng.integers(0, len(values), size=(reps, len(values)))].sum(1)
    means = sums / len(diff)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def within_stratum_sd(diff: np.ndarray, strata: np.ndarray) -> float:
    """The s.d. of one query's difference around its stratum's mean (pooled over strata)."""
    diff, strata = np.asarray(diff, float), pooled_strata(strata)
    centred = np.concatenate([diff[strata == s] - diff[strata == s].mean() for s in np.unique(strata)])
    dof = len(diff) - len(np.unique(strata))
    return float(np.sqrt((centred ** 2).sum() / dof)) if dof > 0 else math.nan


def queries_needed(mean: float, sd: float, level: float = LEVEL, power: float = POWER) -> float:
    """Queries at which a difference `mean` with per-query s.d. `sd` is resolved with probability `power`."""
    if not (math.isfinite(mean) and math.isfinite(sd)) or mean == 0:
        return math.nan
    z = norm.ppf(1 - (1 - level) / 2) + norm.ppf(power)
    return float(math.ceil((z * sd / abs(mean)) ** 2))


def summarize_difference(diff: np.ndarray, strata: np.ndarray) -> dict:
    """ci_lo, ci_hi, resolved, and queries_needed (NaN where resolved) of one paired difference."""
    lo, hi = bootstrap_interval(diff, strata)
    resolved = bool(lo > 0 or hi < 0)
    needed = math.nan if resolved else queries_needed(float(np.mean(diff)), within_stratum_sd(diff, strata))
    return {"ci_lo": lo, "ci_hi": hi, "resolved": resolved, "queries_needed": needed}
