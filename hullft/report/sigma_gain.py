"""Does the surrogate's uncertainty predict the gain? (SIFT's second claim.) Per selector and setting: the
Spearman rank correlation between a query's posterior sigma (after its selection; hullft/selection/posterior.py) and its
realised gain (bpb_base - bpb, and the same in % of bpb_base), with a bootstrap 95% interval over queries,
and a scatter plot of gain against sigma."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import rankdata  # noqa: E402

BOOTSTRAP = 2000


def spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho along the last axis (average ranks for ties); NaN where a side is constant."""
    rx, ry = rankdata(x, axis=-1), rankdata(y, axis=-1)
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
    denominator = np.sqrt((rx ** 2).sum(-1) * (ry ** 2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (rx * ry).sum(-1) / denominator, np.nan)


def rho_with_interval(x: np.ndarray, y: np.ndarray, seed: int = 0):
    """rho and the 2.5/97.5 percentiles of rho over bootstrap resamples of the queries."""
    rho = float(spearman(x, y))
    if len(x) < 3:
        return rho, np.nan, np.nan
    idx = np.random.default_rng(seed).integers(0, len(x), size=(BOOTSTRAP, len(x)))
    boot = spearman(x[idx], y[idx])
    boot = boot[np.isfinite(boot)]
    low, high = np.percentile(boot, [2.5, 97.5]) if len(boot) else (np.nan, np.nan)
    return rho, float(low), float(high)


def gains(records: pd.DataFrame) -> pd.DataFrame:
    return records.assign(gain=records.bpb_base - records.bpb, gain_pct=100.0 - records.bpb_pct)


def sigma_table(records: pd.DataFrame) -> pd.DataFrame:
    """One row per method, selector and setting: queries, rho(sigma, gain) and rho(sigma, gain %), with intervals."""
    rows = []
    if "sigma" not in records:
        return pd.DataFrame(rows)
    df = gains(records[np.isfinite(records.sigma)])
    for (method, selector, setting), group in df.groupby(["method", "selector", "setting"], sort=False):
        row = {"method": method, "selector": selector, "setting": setting, "queries": len(group),
               "sigma": group.sigma.mean()}
        for column in ("gain", "gain_pct"):
            rho, low, high = rho_with_interval(group.sigma.values, group[column].values)
            row.update({f"rho_{column}": rho, f"rho_{column}_low": low, f"rho_{column}_high": high})
        rows.append(row)
    return pd.DataFrame(rows)


def sigma_plot(records: pd.DataFrame, path: Path) -> Path:
    df = gains(records[np.isfinite(records.sigma)])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (method, selector, setting), group in df.groupby(["method", "selector", "setting"], sort=False):
        ax.scatter(group.sigma, group.gain_pct, s=14, alpha=0.7, label=f"{method}/{selector} {setting}")
    ax.axhline(0, color="k", lw=0.8, alpha=0.5)
    ax.set_xlabel("posterior sigma of the query after its selection")
    ax.set_ylabel("realised gain (% of base BPB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
