"""The report's tables: per domain, paired, and one point per configuration for the front.

- `domain_table`: per domain x method x selector x setting, the mean of per-query BPB% +- its standard error
  (over all domains: stratified by domain, as every standard error of the report), and the
  byte-weighted BPB (sum of nats / ln 2 / sum of bytes over the queries, as lm-eval and TTT-NN aggregate) with its
  % of the base model's byte-weighted BPB;
- `paired_table`: each arm (a selector under finetuning, or method/selector) against each other on the same
  queries (same domain, setting and query; the anchors, n = 0 arms of a fixed budget such as none and
  dynamic_eval, against every setting): the mean difference of BPB% with its stratified standard error, 95% t
  interval and p-value (intervals.py), `resolved` (the interval excludes zero), `holm` (still resolved under
  Holm's correction over every row of the table), the queries that would resolve it, and the share of queries the
  first one wins (ties count half);
- `summarize`: one point per configuration (mean BPB% against mean wall-clock per query, Pareto front marked;
  one-time work such as merge's experts in total and per query, never in the per-query seconds), and how its
  training steps ran (`steps`: compiled, eager, captured, or the mix where a point's records differ).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from hullft.report.intervals import holm, stratified, summarize_difference
from hullft.report.loading import with_settings


def _stratified_se(groups) -> pd.Series:
    """Each group's standard error of its mean BPB%, stratified by domain as the paired table's (intervals.py)."""
    return groups[["bpb_pct", "stratum"]].apply(lambda g: stratified(g.bpb_pct.to_numpy(), g.stratum.to_numpy()).se)


def _with_overall(records: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([records, records.assign(domain="ALL")], ignore_index=True)


def _byte_weighted(group: pd.DataFrame) -> pd.Series:
    """sum of nats / ln 2 / sum of bytes, for the finetuned and the base model (NaN for records without them)."""
    if "nll_nats" not in group or group.nll_nats.isna().any():
        return pd.Series({"bpb_bw": np.nan, "bpb_bw_base": np.nan, "bpb_bw_pct": np.nan})
    bw = group.nll_nats.sum() / np.log(2) / group.query_bytes.sum()
    base = group.nll_nats_base.sum() / np.log(2) / group.query_bytes_base.sum()
    return pd.Series({"bpb_bw": bw, "bpb_bw_base": base, "bpb_bw_pct": 100.0 * bw / base})


def domain_table(records: pd.DataFrame) -> pd.DataFrame:
    keys = ["domain", "method", "selector", "label", "setting"]
    groups = _with_overall(with_settings(records).assign(stratum=records.domain)).groupby(keys)
    table = groups.agg(n=("n", "mean"), bpb_pct=("bpb_pct", "mean"), queries=("bpb_pct", "size"),
                       t_total=("t_total", "mean"), order=("order", "first"))
    table.insert(2, "se", _stratified_se(groups))
    weighted = groups[[c for c in ("nll_nats", "nll_nats_base", "query_bytes", "query_bytes_base")
                       if c in records]].apply(_byte_weighted)
    table = table.join(weighted).reset_index().sort_values(["domain", "method", "selector", "label", "order"])
    table = table.drop(columns="order").reset_index(drop=True)
    return table if table.label.astype(bool).any() else table.drop(columns="label")


def arm(records: pd.DataFrame) -> pd.Series:
    """What a record's BPB% is compared by: `selector` for finetuning, `method/selector` for the others, the
    method alone where nothing is selected (none, dynamic_eval); then the configuration's label, if any."""
    other = np.where(records.selector == "none", records.method, records.method + "/" + records.selector)
    name = pd.Series(np.where(records.method == "finetune", records.selector, other), index=records.index)
    label = records["label"] if "label" in records else pd.Series("", index=records.index)
    return name.where(label == "", name + " " + label)


PAIRED_COLUMNS = ["domain", "setting", "a", "b", "queries", "diff_pct", "se", "df", "ci_lo", "ci_hi", "p", "resolved",
                  "holm", "queries_needed", "lone_domains", "a_wins"]


def paired_table(records: pd.DataFrame) -> pd.DataFrame:
    """Arm a against arm b on the queries both scored: diff = a's BPB% - b's (negative: a is better). Arms are
    compared at the same setting; anchors (fixed-budget records that selected nothing: none, dynamic_eval) against
    every arm at every setting. `holm` is read over every row of the table: the family of its comparisons."""
    rows = []
    records = _with_overall(with_settings(records).assign(stratum=records.domain)).assign(arm=arm)
    for domain, in_domain in records.groupby("domain"):
        anchors = in_domain[in_domain.anchor]
        for setting, group in in_domain[~in_domain.anchor].groupby("setting"):
            rows += [row for row in _pairs(domain, setting, pd.concat([group, anchors]))
                     if not {row["a"], row["b"]} <= set(anchors.arm)]  # anchors against each other: once, at n=0
        if len(anchors):
            rows += _pairs(domain, "n=0", anchors)
    table = pd.DataFrame(rows, columns=[c for c in PAIRED_COLUMNS if c != "holm"])
    table.insert(PAIRED_COLUMNS.index("holm"), "holm", holm(table.p.to_numpy(float)))
    return table


def _pairs(domain: str, setting: str, group: pd.DataFrame) -> list:
    per_query = group.pivot_table(index=["stratum", "query_id"], columns="arm", values="bpb_pct", aggfunc="mean")
    names, rows = sorted(per_query.columns), []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = per_query[[a, b]].dropna()
            if both.empty:
                continue
            diff = both[a] - both[b]
            rows.append({"domain": domain, "setting": setting, "a": a, "b": b, "queries": len(diff),
                         "diff_pct": diff.mean(),
                         **summarize_difference(diff.values, diff.index.get_level_values("stratum")),
                         "a_wins": float(((diff < 0) + 0.5 * (diff == 0)).mean())})
    return rows


def family_line(paired: pd.DataFrame) -> str:
    """How many comparisons the paired table makes, and how many stay resolved under Holm's correction."""
    tested = int(paired.p.notna().sum())
    return (f"{tested} paired comparisons: {int(paired.resolved.sum())} resolved at 95% each, "
            f"{int(paired.holm.sum())} under Holm's correction over all {tested} (family-wise 5%)")


def pareto_mask(t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """True where no other point is at least as fast and as good, and strictly better in one."""
    t, y = np.asarray(t, float), np.asarray(y, float)
    dominated = ((t[None, :] <= t[:, None]) & (y[None, :] <= y[:, None])
                 & ((t[None, :] < t[:, None]) | (y[None, :] < y[:, None]))).any(1)
    return ~dominated


def steps_kind(records: pd.DataFrame) -> pd.Series:
    """How each record's training steps ran: captured (CUDA graphs), compiled, eager, or eager+sparse (eager with
    the tied embedding's gradient formed sparse: the engine/train_steps.py's step since 2026-12-07)."""
    flag = lambda column: records[column].fillna(False).astype(bool) if column in records else False  # noqa: E731
    eager = np.where(flag("sparse_embedding_grad"), "eager+sparse", "eager")
    kind = np.where(flag("captured"), "captured", np.where(flag("compiled"), "compiled", eager))
    return pd.Series(kind, index=records.index)


def _mix(kinds: pd.Series) -> str:
    counts = kinds.value_counts()
    return counts.index[0] if len(counts) == 1 else "mixed: " + ", ".join(f"{k} {v}" for k, v in counts.items())


def summarize(records: pd.DataFrame) -> pd.DataFrame:
    """One point per configuration (shards merged): mean BPB%, mean wall-clock per query and its parts, and
    the mean GFLOPs of a query's scoring and training (NaN for records written before FLOPs were counted)."""
    records = with_settings(records).assign(steps=steps_kind, stratum=records.domain)
    records = records.assign(**{c: np.nan for c in ("t_eval", "eval_flops", "train_flops") if c not in records})
    records = records.assign(gflops=(records.eval_flops + records.train_flops) / 1e9)
    records = records.assign(config_id=records["config_id"] if "config_id" in records else records.config_hash)
    records = records.assign(**{c: records[c].fillna(0.0) if c in records else 0.0
                                for c in ("t_offline", "offline_flops")})
    groups = records.groupby(["method", "selector", "label", "setting", "refresh_interval", "config_id"])
    points = (groups.agg(n=("n", "mean"), bpb_pct=("bpb_pct", "mean"), se=("bpb_pct", "size"),
                         t_total=("t_total", "mean"), t_select=("t_select", "mean"),
                         t_finetune=("t_finetune", "mean"), t_eval=("t_eval", "mean"), gflops=("gflops", "mean"),
                         fwd_bwd=("fwd_bwd", "mean"), queries=("bpb_pct", "size"), offline_s=("t_offline", "max"),
                         offline_gflops=("offline_flops", "max"), steps=("steps", _mix))
              .assign(se=_stratified_se(groups))
              .reset_index().sort_values(["method", "selector", "t_total"]).reset_index(drop=True))
    points["offline_gflops"] /= 1e9
    # one-time work (merge's experts) in total and shared over this run's queries; not in t_total
    points["offline_s_per_query"] = points.offline_s / points.queries
    points["pareto"] = pareto_mask(points.t_total.values, points.bpb_pct.values)
    return points
