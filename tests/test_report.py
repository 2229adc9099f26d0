import math

import numpy as np
import pandas as pd
import pytest

from hullft.report.cli import main
from hullft.report.intervals import stratified
from hullft.report.tables import domain_table, paired_table


def synthetic_records(seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for domain in ("code", "law"):
        for q in range(6):
            qid = f"{domain}-{q}"
            nbytes = int(rng.integers(200, 5000))
            base = float(rng.uniform(0.5, 1.5)) * nbytes * math.log(2)
            for selector, gain in (("hullft", 0.95), ("nn", 0.97), ("sift", 0.96)):
                nll = base * gain * float(rng.uniform(0.97, 1.03))
                rows.append({"query_id": qid, "domain": domain, "selector": selector, "n": 4, "refresh_interval": 2,
                             "config_hash": selector, "nll_nats": nll, "nll_nats_base": base,
                             "query_bytes": nbytes, "query_bytes_base": nbytes,
                             "bpb": nll / math.log(2) / nbytes, "bpb_base": base / math.log(2) / nbytes,
                             "t_total": 1.0, "t_select": 0.0, "t_finetune": 1.0, "fwd_bwd": 4})
    df = pd.DataFrame(rows)
    df["bpb_pct"] = 100 * df.bpb / df.bpb_base
    return df


def test_byte_weighted_bpb_is_total_nats_over_total_bytes():
    df = synthetic_records()
    table = domain_table(df).set_index(["domain", "selector", "setting"])
    for selector in ("hullft", "nn"):
        rows = df[df.selector == selector]
        expected = sum(rows.nll_nats) / math.log(2) / sum(rows.query_bytes)
        base = sum(rows.nll_nats_base) / math.log(2) / sum(rows.query_bytes_base)
        got = table.loc[("ALL", selector, "n=4")]
        assert got.bpb_bw == pytest.approx(expected, rel=1e-12)
        assert got.bpb_bw_pct == pytest.approx(100 * expected / base, rel=1e-12)
        assert got.bpb_pct == pytest.approx(rows.bpb_pct.mean(), rel=1e-12)
        assert got.se == pytest.approx(stratified(rows.bpb_pct.to_numpy(), rows.domain.to_numpy()).se)
        # byte-weighted is not the mean of per-query BPB when documents differ in length
        assert got.bpb_bw != pytest.approx(rows.bpb.mean(), rel=1e-6)


def test_paired_comparison_on_the_same_queries():
    df = synthetic_records()
    df = df[~((df.selector == "nn") & (df.query_id == "law-0"))]  # nn missed one query: pairs drop it
    paired = paired_table(df).set_index(["domain", "a", "b"])
    a = df[df.selector == "hullft"].set_index("query_id").bpb_pct
    b = df[df.selector == "nn"].set_index("query_id").bpb_pct
    diff = (a - b).dropna()
    row = paired.loc[("ALL", "hullft", "nn")]
    assert row.queries == len(diff) == 11
    assert row.diff_pct == pytest.approx(diff.mean())
    domains = np.array([q.split("-")[0] for q in diff.index])  # the se is the stratified one, by domain
    by_hand = sum((diff[domains == d].var(ddof=1) * (domains == d).sum()) for d in ("code", "law")) / len(diff) ** 2
    assert row.se == pytest.approx(math.sqrt(by_hand))
    assert row.a_wins == pytest.approx((diff < 0).mean())
    assert paired.loc[("code", "hullft", "sift")].queries == 6


def test_arms_that_select_nothing_meet_every_n_and_each_other_once():
    df = synthetic_records().assign(method="finetune")
    anchors = [df[df.selector == "nn"].assign(method=method, selector="none", n=0, config_hash=method,
                                              bpb_pct=pct)
               for method, pct in (("none", 100.0), ("dynamic_eval", 98.0))]
    paired = paired_table(pd.concat([df, *anchors]))
    overall = paired[paired.domain == "ALL"].set_index(["setting", "a", "b"])
    assert overall.loc[("n=4", "dynamic_eval", "hullft")].queries == 12  # named by the method alone
    assert overall.loc[("n=4", "hullft", "none")].queries == 12
    assert overall.loc[("n=0", "dynamic_eval", "none")].diff_pct == pytest.approx(-2.0)
    anchor_pairs = paired[(paired.a == "dynamic_eval") & (paired.b == "none") & (paired.domain == "ALL")]
    assert anchor_pairs.setting.tolist() == ["n=0"]


def test_report_cli_writes_the_paired_table(tmp_path, capsys):
    df = synthetic_records()
    df.to_parquet(tmp_path / "records.parquet")
    main([str(tmp_path), "--out", str(tmp_path / "out")])
    assert (tmp_path / "out" / "paired.md").exists()
    printed = capsys.readouterr().out
    assert "bpb_bw_pct" in printed and "a_wins" in printed


def test_one_time_work_is_reported_in_total_and_per_query_but_not_in_the_seconds():
    from hullft.report.plots import offline_caption
    from hullft.report.tables import summarize

    df = synthetic_records()
    df["method"] = "finetune"
    merged = df[df.selector == "nn"].assign(method="merge", selector="none", n=0, config_hash="merge",
                                            t_offline=600.0, offline_flops=3e12, t_total=0.5)
    points = summarize(pd.concat([df, merged], ignore_index=True)).set_index("method")
    assert points.loc["merge", "offline_s"] == 600.0 and points.loc["merge", "offline_gflops"] == 3000.0
    assert points.loc["merge", "offline_s_per_query"] == pytest.approx(600.0 / 12)
    assert points.loc["merge", "t_total"] == 0.5  # per-query test-time seconds only
    assert (points.loc["finetune", "offline_s"] == 0).all()
    assert offline_caption(points.reset_index()) == "merge n=0: one-time 600 s, 3,000 GFLOPs (50.00 s per query over 12)"


def test_a_point_whose_steps_ran_compiled_and_eager_says_so(capsys, tmp_path):
    from hullft.report.tables import summarize

    df = synthetic_records().assign(compiled=True)
    df.loc[(df.selector == "nn") & df.query_id.str.startswith("law"), "compiled"] = False
    points = summarize(df).set_index("selector")
    assert points.loc["hullft", "steps"] == "compiled"
    assert points.loc["nn", "steps"] == "mixed: compiled 6, eager 6"
    df.to_parquet(tmp_path / "records.parquet")
    main([str(tmp_path), "--out", str(tmp_path / "out")])
    assert "nn n=4: its records' steps ran compiled 6, eager 6" in capsys.readouterr().out
    assert "mixed: compiled 6, eager 6" in (tmp_path / "out" / "points.md").read_text()


def test_eager_steps_with_the_sparse_embedding_gradient_are_told_apart_from_older_eager_ones():
    from hullft.report.tables import summarize

    df = synthetic_records().assign(compiled=False, sparse_embedding_grad=True)
    df = df.astype({"sparse_embedding_grad": object})
    df.loc[(df.selector == "nn") & df.query_id.str.startswith("law"), "sparse_embedding_grad"] = None
    points = summarize(df).set_index("selector")
    assert points.loc["hullft", "steps"] == "eager+sparse"
    assert points.loc["nn", "steps"] == "mixed: eager+sparse 6, eager 6"


def test_anytime_curves_run_from_the_base_model_through_every_budget(tmp_path):
    from hullft.report.plots import anytime_curves, anytime_plot
    from hullft.report.tables import summarize

    df = pd.concat([synthetic_records().assign(n=n, t_total=float(n), fwd_bwd=n // 2 + 1) for n in (2, 4, 8)]
                   + [synthetic_records().query("selector == 'nn'").assign(method="none", selector="none", n=0,
                                                                            bpb_pct=100.0, t_total=0.5, fwd_bwd=0)])
    df["method"] = df["method"].fillna("finetune")
    curves = anytime_curves(summarize(df)).set_index(["arm", "n"])
    assert curves.loc[("hullft", 0), "bpb_pct"] == 100.0 and curves.loc[("hullft", 0), "t_total"] == 0.5
    assert curves.loc["nn"].index.tolist() == [0, 2, 4, 8]
    assert curves.loc[("sift", 8), "fwd_bwd"] == 5
    assert anytime_plot(summarize(df), tmp_path / "anytime.png").stat().st_size > 10_000
