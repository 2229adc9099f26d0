"""python -m hullft.keep_records: a front's complete queries kept and put back; the resumed job reruns none."""
import json

import pandas as pd

from hullft.compose import compose_config
from hullft.keep_records import keep
from hullft.runner import run_job


def test_kept_records_put_back_resume_the_job_without_rerunning_a_query(tmp_path, tiny_overrides):
    cfg = compose_config([*tiny_overrides, "queries_per_domain=1", "selector=nn", "budget=1"])
    first = run_job(cfg, tmp_path / "sweep" / "job")
    records = tmp_path / "sweep" / "job" / "records.jsonl"
    complete = records.read_bytes()
    torn = json.dumps({"query_id": "half", "final": True})[:20].encode()
    records.write_bytes(complete + torn)  # a query cut off mid-write
    assert keep(tmp_path / "sweep", tmp_path / "kept") == [f"job: {len(first)} complete queries"]
    assert (tmp_path / "kept" / "job" / "records.jsonl").read_bytes() == complete
    assert (tmp_path / "kept" / "job" / "config.yaml").exists()

    keep(tmp_path / "kept", tmp_path / "machine2")  # a new machine
    again = run_job(cfg, tmp_path / "machine2" / "job")
    pd.testing.assert_frame_equal(first.sort_values("query_id").reset_index(drop=True)[["query_id", "bpb"]],
                                  again.sort_values("query_id").reset_index(drop=True)[["query_id", "bpb"]])
    assert (tmp_path / "machine2" / "job" / "records.jsonl").read_bytes() == complete  # nothing was rerun


def test_a_destination_holding_more_is_left_as_it_is(tmp_path):
    line = json.dumps({"query_id": "a", "final": True}) + "\n"
    (tmp_path / "src" / "job").mkdir(parents=True)
    (tmp_path / "dst" / "job").mkdir(parents=True)
    (tmp_path / "src" / "job" / "records.jsonl").write_text(line)
    (tmp_path / "dst" / "job" / "records.jsonl").write_text(line * 2)
    assert "kept the destination's" in keep(tmp_path / "src", tmp_path / "dst")[0]
    assert (tmp_path / "dst" / "job" / "records.jsonl").read_text() == line * 2
