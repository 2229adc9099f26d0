"""Many workers on one output directory: each query recorded exactly once, equal to a one-process run."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hullft.report.loading import load_records
from hullft.report.tables import summarize

REPO = Path(__file__).resolve().parent.parent
STEPS = ["n", "opt_steps", "fwd_bwd", "distinct", "query_tokens", "train_tokens"]


def start(args, cwd, env=None, **kw):
    return subprocess.Popen([sys.executable, str(REPO / "run.py"), *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}, **kw)


def finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def lines(jsonl: Path):
    """Strict JSON: NaN is refused."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return [json.loads(line, parse_constant=refuse) for line in jsonl.read_text().splitlines()]


def by_query(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path).sort_values(["query_id", "n"]).reset_index(drop=True)


def assert_same_records(mine: pd.DataFrame, single: pd.DataFrame):
    assert mine.query_id.tolist() == single.query_id.tolist()
    np.testing.assert_allclose(mine.bpb, single.bpb, rtol=1e-9)
    pd.testing.assert_frame_equal(mine[STEPS], single[STEPS], check_dtype=False)


@pytest.fixture(scope="module")
def workload(tiny_overrides, tmp_path_factory):
    """24 queries on the tiny model, and the records of one process running them all."""
    args = [*tiny_overrides, "queries_per_domain=8", "selector=nn", "budget=3"]
    cwd = tmp_path_factory.mktemp("single")
    code, _, err = finish(start(args + ["tag=single"], cwd))
    assert code == 0, err[-2000:]
    return args, by_query(next((cwd / "outputs" / "single").rglob("records.parquet")))


def test_four_workers_on_one_directory_record_each_query_once(tmp_path, workload):
    args, single = workload
    procs = [start(args + ["tag=shared"], tmp_path) for _ in range(4)]
    results = [finish(p) for p in procs]
    assert all(code == 0 for code, _, _ in results), [err[-1500:] for _, _, err in results]
    out = next((tmp_path / "outputs" / "shared").iterdir())
    rows = lines(out / "records.jsonl")
    assert len(rows) == len(single) and len({r["query_id"] for r in rows}) == len(single)
    assert_same_records(by_query(out / "records.parquet"), single)
    assert not list((out / "claims").glob("*.json"))  # every claim released


def test_a_joblib_sweep_over_worker_runs_two_workers_on_one_directory(tmp_path, workload):
    """The README's local recipe: `-m hydra/launcher=joblib 'worker=range(2)'` is two jobs on one directory."""
    args, single = workload
    code, _, err = finish(start(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "worker=range(2)",
                                 *args, "tag=pool"], tmp_path))
    assert code == 0, err[-2000:]
    outs = [p.parent for p in (tmp_path / "multirun" / "pool").rglob("records.jsonl")]
    assert len(outs) == 1  # worker names no directory
    rows = lines(outs[0] / "records.jsonl")
    assert len(rows) == len(single) and len({r["query_id"] for r in rows}) == len(single)
    mine = by_query(outs[0] / "records.parquet")
    assert mine.query_id.tolist() == single.query_id.tolist()
    # joblib's workers run with cores / n_jobs threads: float sums in another order, equal to rounding
    np.testing.assert_allclose(mine.bpb, single.bpb, rtol=1e-6)
    pd.testing.assert_frame_equal(mine[STEPS], single[STEPS], check_dtype=False)


def test_a_dead_workers_claim_is_taken_over(tmp_path, workload):
    """A worker killed with -9 leaves its claim and perhaps a torn record; the next worker runs its query."""
    args, single = workload
    first = start(args + ["tag=dead"], tmp_path)
    out = tmp_path / "outputs" / "dead"
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None:
        if list(out.rglob("claims/*.json")) and list(out.rglob("records.jsonl")):
            break
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait()
    out = next(out.iterdir())
    assert list((out / "claims").glob("*.json")), "the worker ended before it could be killed holding a claim"
    with open(out / "records.jsonl", "a") as f:
        f.write('{"query_id": "torn", "n"')  # as if killed mid-write
    code, _, err = finish(start(args + ["tag=dead"], tmp_path))
    assert code == 0, err[-2000:]
    rows = lines(out / "records.jsonl")
    assert sorted(r["query_id"] for r in rows) == sorted(single.query_id)
    assert_same_records(by_query(out / "records.parquet"), single)


def test_sigterm_stops_a_worker_cleanly_and_a_rerun_finishes(tmp_path, workload):
    args, single = workload
    proc = start(args + ["tag=term"], tmp_path)
    out = tmp_path / "outputs" / "term"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        found = list(out.rglob("records.jsonl"))
        if found and found[0].read_text().count("\n") >= 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    code, _, err = finish(proc, timeout=60)
    assert code == 128 + signal.SIGTERM, err[-2000:]
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    out = next(out.iterdir())
    done = lines(out / "records.jsonl")
    assert 3 <= len(done) < len(single)
    assert not list((out / "claims").glob("*.json"))  # its claim went with it
    assert_same_records(by_query(out / "records.parquet").query("query_id in @ids", local_dict={
        "ids": [r["query_id"] for r in done]}), single[single.query_id.isin([r["query_id"] for r in done])]
        .reset_index(drop=True))
    code, _, err = finish(start(args + ["tag=term"], tmp_path))
    assert code == 0, err[-2000:]
    rows = lines(out / "records.jsonl")
    assert len(rows) == len(single) and len({r["query_id"] for r in rows}) == len(single)
    assert_same_records(by_query(out / "records.parquet"), single)


def test_an_empty_shard_says_so_and_merges_into_the_report(tmp_path, tiny_overrides):
    args = [*tiny_overrides, "queries_per_domain=1", "selector=nn", "budget=2"]
    code, out, err = finish(start(args + ["tag=one"], tmp_path))
    assert code == 0, err[-2000:]
    shards = [finish(start(args + ["tag=four", "num_shards=4", f"shard={s}"], tmp_path)) for s in range(4)]
    assert [code for code, _, _ in shards] == [0, 0, 0, 0]
    empty = shards[3][1] + shards[3][2]  # 3 queries over 4 shards: shard 3 has none
    assert "shard=3 holds no query: 3 queries over num_shards=4" in empty and "Traceback" not in empty
    one = load_records([tmp_path / "outputs" / "one"])
    four = load_records([tmp_path / "outputs" / "four"])
    assert len(four) == len(one) == 3
    a, b = summarize(one), summarize(four)
    np.testing.assert_allclose(a.bpb_pct, b.bpb_pct, rtol=1e-9)
    assert a.queries.tolist() == b.queries.tolist()


def test_result_files_follow_the_umask_and_are_strict_json(tmp_path, tiny_overrides):
    args = [*tiny_overrides, "queries_per_domain=1", "selector=nn", "budget=2", "alpha=null", "tag=modes"]
    proc = subprocess.run(["sh", "-c", f"umask 027 && exec {sys.executable} {REPO / 'run.py'} " + " ".join(args)],
                          cwd=tmp_path, capture_output=True, text=True, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = next((tmp_path / "outputs" / "modes").iterdir())
    for name in ("records.parquet", "records.jsonl", "config.yaml"):
        assert (out / name).stat().st_mode & 0o777 == 0o640, name
    rows = lines(out / "records.jsonl")  # alpha is null, not NaN
    assert rows and all(r["alpha"] is None for r in rows)
    assert pd.read_parquet(out / "records.parquet").alpha.isna().all()


def test_old_records_with_nan_still_load(tmp_path):
    from hullft.records import RecordStore

    row = {"query_id": "a", "n": 1, "final": True, "alpha": float("nan"), "config_hash": "h", "data_key": "d"}
    (tmp_path / "records.jsonl").write_text(json.dumps(row) + "\n")  # json.dumps writes NaN
    store = RecordStore(tmp_path, "h")
    store.accept_data("d")
    assert store.done == {"a"} and np.isnan(store.rows[0]["alpha"])


@pytest.mark.parametrize("name, content", [
    ("records.parquet", b"PAR1 not really"),
    ("records.jsonl", b'{"query_id": 1}\n'),
    ("records.parquet", None),  # a parquet file of someone else's columns
])
def test_the_report_refuses_files_it_cannot_use_in_one_line(tmp_path, name, content):
    target = tmp_path / "run" / name
    target.parent.mkdir()
    if content is None:
        pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}).to_parquet(target)
    else:
        target.write_bytes(content)
    proc = subprocess.run([sys.executable, "-m", "hullft.report", str(target), "--out", str(tmp_path / "rep")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode != 0
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and str(target) in proc.stderr


def test_a_worker_that_finds_only_claimed_queries_waits_and_runs_them_when_their_holder_dies(tmp_path, workload):
    """Every query claimed by a live process of this host: the worker waits (it does not exit 0 with queries
    left); once the holder is killed with -9 it takes the claims over and records each query once."""
    from hullft.claims import Claims, process_start

    args, single = workload
    out = tmp_path / "held"
    holder = subprocess.Popen(["sleep", "600"])
    mine = Claims(out)
    other = {**mine.me, "pid": holder.pid, "started": process_start(holder.pid), "token": "another-worker"}
    (out / "claims").mkdir(parents=True)
    for query_id in single.query_id.unique():
        mine.path(query_id).write_text(json.dumps({**other, "query_id": query_id}))
    proc = start(args + ["tag=held", f"hydra.run.dir={out}"], tmp_path)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / "run.log").exists() and "held by other workers" in (out / "run.log").read_text():
            break
        time.sleep(0.2)
    time.sleep(1)
    assert proc.poll() is None, "the worker exited while every query was held by a live worker"
    assert not (out / "records.jsonl").exists()
    holder.kill()
    holder.wait()
    code, _, err = finish(proc)
    assert code == 0, err[-2000:]
    rows = lines(out / "records.jsonl")
    assert sorted(r["query_id"] for r in rows) == sorted(single.query_id)


def test_a_claim_from_another_pid_namespace_is_judged_by_its_heartbeat(tmp_path):
    """Two containers sharing a hostname: a pid of the other namespace says nothing here (it may be a live
    worker whose pid is free in ours), so its fresh claim is held until its heartbeat goes stale."""
    from hullft.claims import Claims

    claims = Claims(tmp_path)
    path = claims.path("q")
    path.parent.mkdir(parents=True)
    dead_pid = 2 ** 22 + 7  # no such pid here
    path.write_text(json.dumps({**claims.me, "pid": dead_pid, "started": "1", "token": "other",
                                "pid_ns": "pid:[4026531836]" if claims.me["pid_ns"] != "pid:[4026531836]"
                                else "pid:[1]"}))
    assert claims.holder_alive(path)  # fresh: held
    os.utime(path, (time.time() - 400, time.time() - 400))
    assert not claims.holder_alive(path)  # stale: taken over
    path.write_text(json.dumps({**claims.me, "pid": dead_pid, "started": "1", "token": "other"}))
    assert not claims.holder_alive(path)  # same namespace: the dead pid is judged at once


def test_four_workers_on_an_empty_cache_build_the_space_once(tmp_path, tiny_overrides):
    """Started together on an empty cache: one builds the data space (the only one that embeds the pool), the
    others wait for it, saying so; then they share the queries, each recorded once."""
    args = [*tiny_overrides, "queries_per_domain=3", "selector=nn", "budget=2", "tag=cold"]
    env = {"HULLFT_CACHE": str(tmp_path / "empty-cache")}
    procs = [start(args, tmp_path, env=env) for _ in range(4)]
    results = [finish(p) for p in procs]
    assert all(code == 0 for code, _, _ in results), [err[-1500:] for _, _, err in results]
    errs = [err for _, _, err in results]
    assert sum("embedding (" in err for err in errs) == 1  # the pool embedded once
    assert sum("being built by another process; waiting" in err for err in errs) >= 1
    out = next((tmp_path / "outputs" / "cold").iterdir())
    rows = lines(out / "records.jsonl")
    assert len(rows) == len({r["query_id"] for r in rows}) == 9
