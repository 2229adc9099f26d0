"""Merge the records of runs, multiruns and shards into tables and a BPB%-vs-wall-clock Pareto plot.

    python -m hullft.report multirun/headline outputs/... --out results/report

Writes
- table.csv/.md: per domain x method x selector x n, the mean of per-query BPB% +- standard error, and the
  byte-weighted BPB (sum of nats / ln 2 / sum of bytes over the queries, as lm-eval and TTT-NN aggregate)
  with its % of the base model's byte-weighted BPB;
- paired.csv/.md: each arm (a selector under finetuning, or method/selector) against each other on the same
  queries (same domain, n and query; the n=0 arms, none and dynamic_eval, against every n): mean difference of
  BPB% +- standard error, its 95% interval (a seeded bootstrap over queries, stratified by domain), whether
  that interval excludes zero (`resolved`), the queries that would resolve a difference of its size at its
  spread (hullft/report/intervals.py), and the share of queries the first one wins (ties count half);
- points.csv/.md (one point per configuration: mean BPB% against mean wall-clock per query, Pareto front
  marked; one-time work such as merge's experts in total and per query at the run's query count, never in the
  per-query seconds) and pareto.png (its title says what the one-time work cost);
- sigma.csv/.md and sigma.png: how well the posterior sigma predicts the gain (hullft/report/sigma_gain.py).

Records are grouped by `setting`: `n=8` for a fixed budget, `alpha=0.5 n<=20` for an adaptive one (placed
on the front at its mean time and mean BPB%; its `n` column is the mean chosen n).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from pyarrow import ArrowException  # noqa: E402

from hullft.errors import UserError, one_line_errors  # noqa: E402
from hullft.records import read_jsonl  # noqa: E402
from hullft.report.configurations import with_configurations  # noqa: E402
from hullft.report.intervals import summarize_difference  # noqa: E402
from hullft.report.sigma_gain import sigma_plot, sigma_table  # noqa: E402


def load_records(paths: Iterable[str | Path]) -> pd.DataFrame:
    files = []
    for p in map(Path, paths):
        files += [p] if p.is_file() else _records_files(p)
    if not files:
        raise FileNotFoundError(f"no records.parquet under {[str(p) for p in paths]}; run `python run.py` first")
    df = with_configurations([_read_records(f) for f in files], files)
    # the same query of the same configuration measured twice (a rerun elsewhere, another tag): keep one
    keys = ["config_id", "query_id"] + (["n"] if "n" in df else [])  # checkpoints: several n per query
    return df.drop_duplicates(keys, keep="last").reset_index(drop=True)


def _records_files(root: Path) -> list:
    """One records file per job directory under root: records.jsonl where it is newer than records.parquet (a job
    still running, or killed, writes its parquet only when it ends or stops), else records.parquet."""
    dirs = sorted({f.parent for name in ("records.parquet", "records.jsonl") for f in root.rglob(name)})
    files = []
    for d in dirs:
        parquet, jsonl = d / "records.parquet", d / "records.jsonl"
        newer = jsonl.exists() and (not parquet.exists() or jsonl.stat().st_mtime > parquet.stat().st_mtime)
        files.append(jsonl if newer else parquet)
    return files


def with_settings(records: pd.DataFrame) -> pd.DataFrame:
    """Adds `setting` (what a point of the front is: a fixed n, or alpha with its cap) and `order` to sort by."""
    alpha = records["alpha"] if "alpha" in records else pd.Series(np.nan, index=records.index)
    budget = records["budget"] if "budget" in records else records["n"]
    fixed = alpha.isna()
    setting = np.where(fixed, "n=" + records.n.astype(int).astype(str),
                       "alpha=" + alpha.map("{:g}".format) + " n<=" + budget.astype(int).astype(str))
    method = records["method"].fillna("finetune") if "method" in records else "finetune"  # older records
    label = records["label"].fillna("") if "label" in records else ""
    return records.assign(setting=setting, order=np.where(fixed, records.n, budget + 0.5), method=method,
                          label=label)


REQUIRED = ["query_id", "domain", "selector", "n", "bpb_pct", "t_total", "config_hash"]


def _read_records(path: Path) -> pd.DataFrame:
    """A records.parquet, or a records.jsonl given by name; anything else, or one without a records file's
    columns, is refused in one line naming the file."""
    try:
        df = read_jsonl(path) if path.suffix == ".jsonl" else pd.read_parquet(path)
    except (ArrowException, OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable records file ({str(e).splitlines()[0][:120]}); delete it, or "
                        f"rerun its job, which rewrites it from records.jsonl") from None
    missing = [c for c in REQUIRED if c not in df]
    if missing:
        raise UserError(f"{path} is not a records file of this harness (no {', '.join(missing)} column); "
                        f"give the report only run, multirun or records.parquet/.jsonl paths")
    return df


def _se(x: pd.Series) -> float:
    return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


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
    groups = _with_overall(with_settings(records)).groupby(keys)
    table = groups.agg(n=("n", "mean"), bpb_pct=("bpb_pct", "mean"), se=("bpb_pct", _se),
                       queries=("bpb_pct", "size"), t_total=("t_total", "mean"), order=("order", "first"))
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


def paired_table(records: pd.DataFrame) -> pd.DataFrame:
    """Arm a against arm b on the queries both scored: diff = a's BPB% - b's (negative: a is better). Arms are
    compared at the same setting (n); those that select nothing (n=0: none, dynamic_eval) against every arm at
    every n."""
    rows = []
    records = _with_overall(with_settings(records).assign(stratum=records.domain)).assign(arm=arm)
    for domain, in_domain in records.groupby("domain"):
        anchors = in_domain[in_domain.n == 0]
        for setting, group in in_domain[in_domain.n > 0].groupby("setting"):
            rows += [row for row in _pairs(domain, setting, pd.concat([group, anchors]))
                     if not {row["a"], row["b"]} <= set(anchors.arm)]  # anchors against each other: once, at n=0
        if anchors.setting.nunique():
            rows += _pairs(domain, "n=0", anchors)
    return pd.DataFrame(rows, columns=["domain", "setting", "a", "b", "queries", "diff_pct", "se", "ci_lo", "ci_hi",
                                       "resolved", "queries_needed", "a_wins"])


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
                         "diff_pct": diff.mean(), "se": _se(diff),
                         **summarize_difference(diff.values, diff.index.get_level_values("stratum")),
                         "a_wins": float(((diff < 0) + 0.5 * (diff == 0)).mean())})
    return rows


def pareto_mask(t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """True where no other point is at least as fast and as good, and strictly better in one."""
    t, y = np.asarray(t, float), np.asarray(y, float)
    dominated = ((t[None, :] <= t[:, None]) & (y[None, :] <= y[:, None])
                 & ((t[None, :] < t[:, None]) | (y[None, :] < y[:, None]))).any(1)
    return ~dominated


def summarize(records: pd.DataFrame) -> pd.DataFrame:
    """One point per configuration (shards merged): mean BPB%, mean wall-clock per query and its parts, and
    the mean GFLOPs of a query's scoring and training (NaN for records written before FLOPs were counted)."""
    records = with_settings(records)
    records = records.assign(**{c: np.nan for c in ("t_eval", "eval_flops", "train_flops") if c not in records})
    records = records.assign(gflops=(records.eval_flops + records.train_flops) / 1e9)
    records = records.assign(config_id=records["config_id"] if "config_id" in records else records.config_hash)
    records = records.assign(**{c: records[c].fillna(0.0) if c in records else 0.0
                                for c in ("t_offline", "offline_flops")})
    points = (records.groupby(["method", "selector", "label", "setting", "refresh_interval", "config_id"])
              .agg(n=("n", "mean"), bpb_pct=("bpb_pct", "mean"), se=("bpb_pct", _se), t_total=("t_total", "mean"),
                   t_select=("t_select", "mean"), t_finetune=("t_finetune", "mean"), t_eval=("t_eval", "mean"),
                   gflops=("gflops", "mean"), fwd_bwd=("fwd_bwd", "mean"), queries=("bpb_pct", "size"),
                   offline_s=("t_offline", "max"), offline_gflops=("offline_flops", "max"))
              .reset_index().sort_values(["method", "selector", "t_total"]).reset_index(drop=True))
    points["offline_gflops"] /= 1e9
    # one-time work (merge's experts) in total and shared over this run's queries; not in t_total
    points["offline_s_per_query"] = points.offline_s / points.queries
    points["pareto"] = pareto_mask(points.t_total.values, points.bpb_pct.values)
    return points


def offline_caption(points: pd.DataFrame) -> str:
    """What the points' one-time work cost, for the plot: their seconds stay per-query test-time seconds."""
    once = points[points.offline_s > 0]
    return "; ".join(f"{r.method} {r.setting} {r.label}".replace("  ", " ").strip() +
                     f": one-time {r.offline_s:,.0f} s, {r.offline_gflops:,.0f} GFLOPs "
                     f"({r.offline_s_per_query:.2f} s per query over {r.queries})" for r in once.itertuples())


MARKERS = {"finetune": "o", "incontext": "s", "finetune+incontext": "D", "dynamic_eval": "^", "none": "*",
           "merge": "P"}


def pareto_plot(points: pd.DataFrame, path: Path) -> Path:
    """Colour: the selector (and the configuration's label); marker (and line style): the method."""
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
            ax.annotate(row.setting, (row.t_total, row.bpb_pct), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(records: pd.DataFrame, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    table = domain_table(records)
    paired = paired_table(records)
    points = summarize(records)
    table.to_csv(out / "table.csv", index=False)
    paired.to_csv(out / "paired.csv", index=False)
    points.to_csv(out / "points.csv", index=False)
    (out / "table.md").write_text(table.to_markdown(index=False, floatfmt=".3f") + "\n")
    (out / "paired.md").write_text(paired.to_markdown(index=False, floatfmt=".3f") + "\n")
    shown = points.drop(columns=["config_id"] + ([] if points.label.astype(bool).any() else ["label"]))
    (out / "points.md").write_text(shown.to_markdown(index=False, floatfmt=".3f") + "\n")
    pareto_plot(points, out / "pareto.png")
    sigma = sigma_table(with_settings(records))
    if len(sigma):
        sigma.to_csv(out / "sigma.csv", index=False)
        (out / "sigma.md").write_text(sigma.to_markdown(index=False, floatfmt=".3f") + "\n")
        sigma_plot(with_settings(records), out / "sigma.png")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help="run/multirun directories or records.parquet files")
    ap.add_argument("--out", default="results/report", help="where to write the tables and plot")
    args = ap.parse_args(argv)
    with one_line_errors():
        records = load_records(args.paths)
        write_report(records, Path(args.out))
    overall = domain_table(records).query("domain == 'ALL'").drop(columns="domain")
    print(overall.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    paired = paired_table(records).query("domain == 'ALL'").drop(columns="domain")
    if len(paired):
        print("\npaired, all domains (diff = a - b in BPB%, 95% bootstrap interval; a_wins = share of queries where "
              "a is lower; queries_needed: to resolve an unresolved difference of its size with 80% power):")
        print(paired.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    sigma = sigma_table(with_settings(records))
    if len(sigma):
        print("\nsigma vs realised gain (Spearman rho, bootstrap 95% interval over queries):")
        print(sigma.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    caption = offline_caption(summarize(records))
    if caption:
        print(f"\none-time work, not in the per-query seconds: {caption}")
    print(f"\nwrote {args.out}/table.md, paired.md, points.md, pareto.png" + (", sigma.md, sigma.png" if len(sigma) else ""))


if __name__ == "__main__":
    main()
