"""The report's figures, from its points (one per configuration and setting: tables.summarize):

- `pareto_plot`: BPB% against mean wall-clock per query, every point, the Pareto front marked;
- `anytime_plot`: per arm (method, selector, label) over its fixed budgets, BPB% against the seconds a query costs
  at each n (each checkpoint a point, from the base model at n = 0), and beside it the forward/backward passes
  against n, where Gradient Reuse shows as passes below n.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

MARKERS = {"finetune": "o", "incontext": "s", "finetune+incontext": "D", "dynamic_eval": "^", "none": "*",
           "merge": "P"}


def offline_caption(points: pd.DataFrame) -> str:
    """What the points' one-time work cost, for the plot: their seconds stay per-query test-time seconds."""
    once = points[points.offline_s > 0]
    return "; ".join(f"{r.method} {r.setting} {r.label}".replace("  ", " ").strip() +
                     f": one-time {r.offline_s:,.0f} s, {r.offline_gflops:,.0f} GFLOPs "
                     f"({r.offline_s_per_query:.2f} s per query over {r.queries})" for r in once.itertuples())


def pareto_plot(points: pd.DataFrame, path: Path) -> Path:
    """Colour: the selector (and the configuration's label); marker (and line style): the method. A point whose
    records mix compiled and eager steps is annotated so."""
    fig, ax = plt.subplots(figsize=(8, 5))
    arms = sorted(set(zip(points.selector, points.label)))  # configurations of one selector apart by colour too
    colours = {a: f"C{i % 10}" for i, a in enumerate(arms)}
    for (method, name, extra), group in points.groupby(["method", "selector", "label"]):
        group = group.sort_values("t_total")
        label = name if method == "finetune" else f"{method}/{name}" if name != "none" else method
        label = f"{label} {extra}".strip()
        ax.errorbar(group.t_total, group.bpb_pct, yerr=group.se.fillna(0), marker=MARKERS.get(method, "x"),
                    color=colours[name, extra], linestyle="-" if method == "finetune" else ":", capsize=3, label=label,
                    markersize=9 if method == "none" else 6)
        for row in group.itertuples():
            mixed = " (steps mixed)" if str(getattr(row, "steps", "")).startswith("mixed") else ""
            ax.annotate(row.setting + mixed, (row.t_total, row.bpb_pct), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
    front = points[points.pareto].sort_values("t_total")
    ax.plot(front.t_total, front.bpb_pct, "k--", lw=1, alpha=0.6, label="Pareto front")
    ax.scatter(front.t_total, front.bpb_pct, s=140, facecolors="none", edgecolors="k")
    ax.set_xlabel("mean wall-clock per query (s): retrieve + select + finetune + score")
    caption = offline_caption(points)
    if caption:
        ax.set_title("not in the seconds: " + caption, fontsize=7, wrap=True)
    ax.set_ylabel("BPB % of the base model (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def anytime_curves(points: pd.DataFrame) -> pd.DataFrame:
    """Per training arm with at least two fixed budgets, its points by n, from the base model's (`none`) at n = 0
    where the report holds one: arm, n, t_total, bpb_pct, fwd_bwd."""
    fixed = points[points.setting.str.startswith("n=")]
    base = fixed[fixed.method == "none"]
    curves = []
    for (method, selector, label), arm in fixed[fixed.fwd_bwd.fillna(0).gt(0)].groupby(["method", "selector", "label"]):
        if arm.n.nunique() < 2:
            continue
        start = base.head(1).assign(fwd_bwd=0.0) if len(base) else base
        name = (selector if method == "finetune" else f"{method}/{selector}") + (f" {label}" if label else "")
        curve = pd.concat([start, arm]).assign(arm=name)[["arm", "n", "t_total", "bpb_pct", "fwd_bwd"]]
        curves.append(curve.sort_values("n"))
    return pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(
        columns=["arm", "n", "t_total", "bpb_pct", "fwd_bwd"])


def anytime_plot(points: pd.DataFrame, path: Path) -> Path | None:
    curves = anytime_curves(points)
    if curves.empty:
        return None
    fig, (quality, passes) = plt.subplots(1, 2, figsize=(12, 5))
    for i, (name, curve) in enumerate(curves.groupby("arm", sort=True)):
        colour = f"C{i % 10}"
        quality.plot(curve.t_total, curve.bpb_pct, marker="o", color=colour, label=name)
        passes.plot(curve.n, curve.fwd_bwd, marker="o", color=colour, label=name)
        for row in curve.itertuples():
            quality.annotate(f"{row.n:g}", (row.t_total, row.bpb_pct), textcoords="offset points", xytext=(3, 3),
                             fontsize=7)
    top = curves.n.max()
    passes.plot([0, top], [0, top], "k:", lw=1, label="one pass per step")
    quality.set_xlabel("mean wall-clock per query (s) at n")
    quality.set_ylabel("BPB % of the base model (lower is better)")
    passes.set_xlabel("n (optimizer steps)")
    passes.set_ylabel("forward/backward passes per query")
    for ax in (quality, passes):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
