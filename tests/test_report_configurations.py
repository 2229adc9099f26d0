"""The report keeps every configuration apart and labels what differs; one configuration's shards merge."""
import copy

import pandas as pd

import yaml

from hullft.report.cli import write_report
from hullft.report.loading import load_records
from hullft.report.tables import domain_table, paired_table, summarize
from tests.test_report import synthetic_records

BASE = {"model": {"name": "smollm2-135m", "dtype": "bf16"}, "engine": {"name": "hullft", "lr": 5e-5},
        "selector": {"_target_": "baselines.nn.NearestNeighbours"}, "budget": 4, "checkpoints": [],
        "method": {"_target_": "hullft.methods.finetune.Finetune"}, "shard": 0, "num_shards": 1, "worker": 0,
        "tag": "run", "logger": {"name": "none"}}


def job(root, name, selector, method="finetune", shard=0, queries=slice(None), alpha=None, budget=4, **changes):
    config = copy.deepcopy(BASE)
    config.update(shard=shard, tag=name, alpha=alpha, budget=budget)
    if selector == "hullft":
        config["selector"] = {"_target_": "hullft.selection.hullft.HullFT", "swap_passes": 2}
    if method == "incontext":
        config["method"] = {"_target_": "hullft.methods.incontext.InContext", "context_tokens": 200}
    for dotted, value in changes.items():
        group, key = dotted.split("__")
        config[group][key] = value
    records = synthetic_records()
    records = records[records.selector == ("hullft" if selector == "hullft" else "nn")].iloc[queries]
    records = records.assign(method=method, selector=selector, config_hash=name)
    out = root / name
    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    records.to_parquet(out / "records.parquet")


def test_a_sweep_over_a_method_and_an_engine_parameter_stays_apart_and_shards_merge(tmp_path):
    job(tmp_path, "ctx32", "nn", "incontext", method__context_tokens=32)
    job(tmp_path, "ctx256", "nn", "incontext", method__context_tokens=256)
    job(tmp_path, "lr5", "nn", engine__lr=5e-5)
    job(tmp_path, "lr10", "nn", engine__lr=1e-4)
    job(tmp_path, "hull-shard0", "hullft", shard=0, queries=slice(0, None, 2))
    job(tmp_path, "hull-shard1", "hullft", shard=1, queries=slice(1, None, 2))
    records = load_records([tmp_path])
    overall = domain_table(records).query("domain == 'ALL'")
    rows = {(r.method, r.selector, r.label): r.queries for r in overall.itertuples()}
    assert rows == {("incontext", "nn", "engine.lr=5e-05 context_tokens=32"): 12,
                    ("incontext", "nn", "engine.lr=5e-05 context_tokens=256"): 12,
                    ("finetune", "nn", "engine.lr=5e-05"): 12, ("finetune", "nn", "engine.lr=0.0001"): 12,
                    ("finetune", "hullft", "engine.lr=5e-05"): 12}  # hullft's two shards: one row
    assert len(summarize(records)) == 5
    paired = paired_table(records).query("domain == 'ALL'")
    assert ("nn engine.lr=0.0001", "nn engine.lr=5e-05") in set(zip(paired.a, paired.b))
    write_report(records, tmp_path / "out")
    assert "context_tokens=256" in (tmp_path / "out" / "points.md").read_text()


def test_runs_that_differ_only_in_what_names_nothing_merge_unlabelled(tmp_path):
    job(tmp_path, "a", "nn", queries=slice(0, 6))
    job(tmp_path, "b", "nn", shard=1, queries=slice(6, None))
    records = load_records([tmp_path])
    assert records.label.eq("").all() and records.config_id.nunique() == 1
    assert "label" not in domain_table(records)
    assert len(summarize(records)) == 1 and summarize(records).queries.iloc[0] == 12


def test_models_and_precisions_that_differ_are_named(tmp_path):
    job(tmp_path, "fp32", "nn", model__dtype="fp32")
    job(tmp_path, "gpt2", "nn", model__name="gpt2")
    labels = set(load_records([tmp_path]).label)
    assert labels == {"model.dtype=fp32 model=smollm2-135m", "model.dtype=bf16 model=gpt2"}


def test_adaptive_budgets_stay_apart_and_are_never_anchors(tmp_path):
    """Two alphas whose queries chose the same n keep every record; a rule that chose no step is its own point
    at n = 0, not an anchor that every fixed-budget arm is paired against."""
    for alpha in (0.5, 1.0):
        job(tmp_path, f"alpha{alpha}", "hullft", alpha=alpha, budget=20)
        frame = tmp_path / f"alpha{alpha}" / "records.parquet"
        pd.read_parquet(frame).assign(alpha=alpha, budget=20, n=0, bpb_pct=100.0).to_parquet(frame)
    job(tmp_path, "nn", "nn")
    job(tmp_path, "hull", "hullft")
    records = load_records([tmp_path])
    assert len(records) == 4 * 12  # no alpha's records dropped where both chose n = 0
    points = summarize(records).set_index("setting")
    assert points.loc["alpha=0.5 n<=20"].queries == points.loc["alpha=1 n<=20"].queries == 12
    assert set(records.label) == {""}  # alpha is shown by the setting, not the label
    paired = paired_table(records).query("domain == 'ALL'")
    assert set(paired.setting) == {"n=4"}  # one arm per alpha: nothing to pair it with, no anchor among them
    fixed = paired[paired.setting == "n=4"]
    assert set(zip(fixed.a, fixed.b)) == {("hullft", "nn")}
    alone = paired_table(records[records.alpha.isna()]).query("domain == 'ALL'")
    assert fixed.diff_pct.tolist() == alone.diff_pct.tolist()


def test_a_merge_that_ran_fused_and_through_torch_is_two_labelled_configurations(tmp_path):
    job(tmp_path, "merge", "none", "merge")
    frame = tmp_path / "merge" / "records.parquet"
    records = pd.read_parquet(frame)
    records.assign(n=0, merge_path=["fused"] * 6 + ["torch"] * 6).to_parquet(frame)
    job(tmp_path, "nn", "nn")
    records = load_records([tmp_path])
    labels = dict(zip(records.merge_path.fillna("-"), records.label))
    assert labels == {"fused": "merge_path=fused", "torch": "merge_path=torch", "-": ""}
    assert len(summarize(records)) == 3
