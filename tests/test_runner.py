"""The runner end to end through `python run.py`, on the tiny model and the fixture corpus."""
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hullft.report.cli import write_report
from hullft.report.loading import load_records
from hullft.report.tables import summarize

REPO = Path(__file__).resolve().parent.parent


def run(args, cwd, check=True, **kw):
    proc = subprocess.run([sys.executable, str(REPO / "run.py"), *args], cwd=cwd, capture_output=True, text=True,
                          env=os.environ.copy(), **kw)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr[-3000:])
    return proc


def read_wandb_log(path):
    """The protobuf records of a .wandb file (a leveldb-style log: 32 KiB blocks of crc/length/type chunks)."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, pending, out = Path(path).read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # full, last
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending + chunk if kind == 4 else chunk)
            out.append(record)
        elif kind in (2, 3):  # first, middle
            pending = chunk if kind == 2 else pending + chunk
    return out


def records(path):
    return pd.read_parquet(path).sort_values("query_id").reset_index(drop=True)


def test_multirun_and_report(tmp_path, tiny_overrides):
    run(["-m", *tiny_overrides, "selector=hullft,nn", "budget=2,4", "tag=grid"], tmp_path)
    files = sorted((tmp_path / "multirun" / "grid").rglob("records.parquet"))
    assert len(files) == 4
    df = load_records([tmp_path / "multirun" / "grid"])
    assert set(zip(df.selector, df.n)) == {("hullft", 2), ("hullft", 4), ("nn", 2), ("nn", 4)}
    assert (df.groupby(["selector", "n"]).size() == 6).all()  # 3 domains x 2 queries
    assert (df.opt_steps == df.n).all() and (df.bpb_pct > 0).all()
    np.testing.assert_allclose(df.bpb_pct, 100 * df.bpb / df.bpb_base)
    nn = df[df.selector == "nn"]
    assert (nn.distinct == nn.n).all() and (nn.fwd_bwd == nn.n).all()
    # the base BPB of a query is computed once and shared by every job of the sweep
    assert df.groupby("query_id").bpb_base.nunique().max() == 1
    out = tmp_path / "report"
    write_report(df, out)
    table = pd.read_csv(out / "table.csv")
    assert set(table.domain) == {"Github", "Docs", "Licenses", "ALL"}
    assert (out / "pareto.png").stat().st_size > 10_000


def test_resume_after_kill_equals_uninterrupted_run(tmp_path, tiny_overrides):
    args = [*tiny_overrides, "queries_per_domain=4", "budget=6"]
    run(args + ["tag=whole"], tmp_path)
    whole = records(next((tmp_path / "outputs" / "whole").rglob("records.parquet")))
    proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), *args, "tag=killed"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline = time.time() + 300
    jsonl = None
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "outputs" / "killed").rglob("records.jsonl"))
        if found and found[0].read_text().count("\n") >= 2:
            jsonl = found[0]
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert jsonl is not None, "the run ended before it could be killed"
    done_before = jsonl.read_text().count("\n")
    assert done_before < len(whole)
    run(args + ["tag=killed"], tmp_path)
    resumed = records(jsonl.parent / "records.parquet")
    assert len(resumed) == len(whole) and resumed.query_id.is_unique
    assert resumed.query_id.tolist() == whole.query_id.tolist()
    np.testing.assert_allclose(resumed.bpb, whole.bpb, rtol=1e-6)
    assert resumed.fwd_bwd.tolist() == whole.fwd_bwd.tolist()


def test_sharded_with_submitit_equals_unsharded(tmp_path, tiny_overrides):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    run([*tiny_overrides, "selector=sift_exact", "tag=single"], tmp_path)
    run(["-m", *tiny_overrides, "hydra/launcher=submitit_local", "selector=sift_exact", "num_shards=2", "shard=0,1",
         "tag=sharded"], tmp_path)
    single = load_records([tmp_path / "outputs" / "single"])
    sharded = load_records([tmp_path / "multirun" / "sharded"])
    assert sharded.shard.nunique() == 2
    a = single.sort_values("query_id").reset_index(drop=True)
    b = sharded.sort_values("query_id").reset_index(drop=True)
    assert a.query_id.tolist() == b.query_id.tolist()
    np.testing.assert_allclose(a.bpb, b.bpb, rtol=1e-6)
    pa, pb = summarize(single), summarize(sharded)
    assert len(pa) == len(pb) == 1 and pa.queries[0] == pb.queries[0]
    np.testing.assert_allclose(pa.bpb_pct, pb.bpb_pct, rtol=1e-6)


def test_wandb_offline_writes_a_readable_run(tmp_path, tiny_overrides):
    run([*tiny_overrides, "logger=wandb", "tag=wb", "queries_per_domain=1"], tmp_path)
    out = next((tmp_path / "outputs" / "wb").iterdir())
    runs = list(out.rglob("offline-run-*"))
    assert len(runs) == 1
    history, summary = [], {}
    for record in read_wandb_log(next(runs[0].glob("*.wandb"))):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({item.key or "/".join(item.nested_key): item.value_json for item in record.history.item})
        if kind == "summary":
            summary.update({item.key or "/".join(item.nested_key): item.value_json for item in record.summary.update})
    assert sum("bpb_pct" in h for h in history) == 3  # one per query
    assert "bpb_pct_mean" in summary and "pareto/path" in summary  # the Pareto plot
    assert summary["records/nrows"] == "3"  # the records table
    from hullft.report.configurations import config_id  # the report's configuration, to group runs by
    assert json.loads(summary["config_id"]) == config_id(yaml.safe_load((out / "config.yaml").read_text()))


def test_logger_none_writes_no_wandb_files(tmp_path, tiny_overrides):
    run([*tiny_overrides, "tag=nowb", "queries_per_domain=1"], tmp_path)
    assert not list(tmp_path.rglob("*.wandb")) and not list(tmp_path.rglob("wandb"))


@pytest.mark.parametrize("override,message", [
    ("selector=nope", "Could not find 'selector/nope'"),
    ("model=nope", "Could not find 'model/nope'"),
    ("engine.nope=1", "Key 'nope' not in"),
    ("budget=0", "budget=0"),
    ("k=3", "k=3 < budget=4"),
    ("shard=2", "shard=2: must lie in [0, num_shards=1)"),
    ("budget=abc", "Value 'abc' of type 'str' could not be converted to Integer"),
    ("model.hub_id=nobody/missing-model", None),
    ("k=100000", "the pool holds only"),
])
def test_bad_input_fails_at_start_with_one_clear_line(tmp_path, tiny_overrides, override, message):
    args = [*tiny_overrides, override]
    if override.startswith("model.hub_id"):
        args = [a for a in args if a != "model=tiny"] + ["model=gpt2"]
        message = "not available offline"
    proc = run(args, tmp_path, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("records.parquet"))


@pytest.mark.parametrize("block_bytes, order", [(None, ["select"] * 6 + ["train"] * 6),
                                                 (1, ["select", "train"] * 6)])
def test_a_blocks_selections_are_made_before_its_first_training_step(tmp_path, tiny_overrides, monkeypatch,
                                                                     block_bytes, order):
    """Selection reads the data space only, so the runner makes (and times) a block's before any of its training."""
    import hullft.per_query
    import hullft.runner
    from hullft.compose import compose_config
    from hullft.engine.finetune import FinetuneEngine

    events, select, finetune, warm_up = [], hullft.per_query.timed_select, FinetuneEngine.finetune, hullft.runner.warm_up
    warmed = []  # the untimed warm-up step before the first query is not a query's training
    monkeypatch.setattr(hullft.runner, "warm_up", lambda *a: warm_up(*a) or warmed.append(True))
    monkeypatch.setattr(hullft.per_query, "timed_select", lambda *a: events.append("select") or select(*a))
    monkeypatch.setattr(FinetuneEngine, "finetune",
                        lambda *a, **k: (warmed and events.append("train")) or finetune(*a, **k))
    if block_bytes is not None:
        monkeypatch.setattr(hullft.runner, "CANDIDATE_BYTES", block_bytes)
    df = hullft.runner.run_job(compose_config([*tiny_overrides, "selector=nn", "budget=2"]), tmp_path)
    assert len(df) == 6 and (df.t_select > 0).all() and df.t_retrieve.gt(0).all()
    assert events == order
