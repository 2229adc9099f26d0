"""Signals never break a lock: SIGTERM delivered at many points of a job stops it cleanly; the next run finishes."""
import os
import signal

import pytest
from filelock import FileLock

from hullft import records
from hullft.claims import Claims
from hullft.compose import compose_config
from hullft.engine.train_steps import EagerSteps
from hullft.records import RecordStore
from hullft.runner import run_job
from hullft.signals import Preempted, stop_on_signals, uninterrupted


def test_a_signal_inside_an_uninterrupted_section_is_raised_when_it_ends():
    reached = []
    with pytest.raises(Preempted):
        with stop_on_signals():
            with uninterrupted():
                os.kill(os.getpid(), signal.SIGTERM)
                reached.append("after the signal, inside")
            reached.append("after the section")
    assert reached == ["after the signal, inside"]


def test_outside_a_section_a_signal_stops_at_once():
    with pytest.raises(Preempted):
        with stop_on_signals():
            os.kill(os.getpid(), signal.SIGINT)
            raise AssertionError("not reached")


# Where the signal is sent from (after the n-th call of the wrapped function returns): inside the records lock while
# a query's records are written, while claims are taken, while a claim is released, while records.parquet is
# written, and between training steps.
POINTS = {"records-written": (records, "strict_json", 2), "claim-taken": (Claims, "try_claim", 3),
          "claim-released": (Claims, "_let_go", 1), "parquet-written": (RecordStore, "_write_parquet", 1),
          "training-step": (EagerSteps, "optimizer_step", 4)}


@pytest.mark.parametrize("point", POINTS)
def test_sigterm_at_any_point_leaves_no_lock_held_and_a_rerun_records_each_query_once(tmp_path, tiny_overrides,
                                                                                      monkeypatch, point):
    owner, name, nth = POINTS[point]
    cfg = compose_config([*tiny_overrides, "queries_per_domain=1", "selector=nn", "budget=2", "engine.compile=false"])
    out = tmp_path / "run"
    original, calls = getattr(owner, name), []

    def signalling(*args, **kwargs):
        calls.append(1)
        result = original(*args, **kwargs)
        if len(calls) == nth:
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(owner, name, signalling)
    with pytest.raises(Preempted):
        run_job(cfg, out)
    monkeypatch.setattr(owner, name, original)
    assert FileLock(str(out / "records.lock")).acquire(timeout=0)  # nobody holds the lock
    records = run_job(cfg, out)
    assert records.query_id.is_unique and len(records) == 3
    assert len((out / "records.jsonl").read_text().splitlines()) == 3  # no torn or doubled line
    assert not list(out.glob("claims/*.json"))
