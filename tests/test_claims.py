"""A claim's holder that is alive but makes no progress is found and its query taken over; a claim is let go
under the records lock."""
import json
import logging
import os
import subprocess
import threading
import time

import pytest
from filelock import FileLock

from hullft import progress
from hullft.claims import Claims, process_start


@pytest.fixture
def live_holder():
    holder = subprocess.Popen(["sleep", "600"])
    yield holder
    holder.kill()
    holder.wait()


def hold(claims, live, query_id, claimed_ago, token="other"):
    path = claims.path(query_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**claims.me, "pid": live.pid, "started": process_start(live.pid), "token": token,
                                "query_id": query_id, "claimed": time.time() - claimed_ago}))
    return path


def test_a_live_holder_without_progress_is_taken_over_in_one_line(tmp_path, live_holder, caplog):
    claims = Claims(tmp_path, stuck_after=60)
    path = hold(claims, live_holder, "q", claimed_ago=30)
    assert claims.holder_alive(path)  # claimed 30 s ago: not stuck yet
    path = hold(claims, live_holder, "q", claimed_ago=90)
    with caplog.at_level(logging.WARNING):
        assert not claims.holder_alive(path)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and f":{live_holder.pid}" in lines[0] and "no progress" in lines[0]
    assert claims.try_claim("q")  # taken over


def test_published_progress_keeps_a_slow_holder(tmp_path, live_holder):
    claims = Claims(tmp_path, stuck_after=60)
    path = hold(claims, live_holder, "q", claimed_ago=3600)
    recent = time.time() - 10
    claims.progress_path("other").touch()
    os.utime(claims.progress_path("other"), (recent, recent))
    assert claims.holder_alive(path)
    old = time.time() - 120
    os.utime(claims.progress_path("other"), (old, old))
    assert not claims.holder_alive(path)


def test_the_heartbeat_publishes_this_workers_last_progress(tmp_path):
    claims = Claims(tmp_path)
    assert claims.try_claim("q")
    progress.mark()
    claims._beat_once()
    published = claims.progress_path(claims.me["token"]).stat().st_mtime
    assert published == pytest.approx(progress.last(), abs=1e-3)


def test_a_claim_is_let_go_only_under_the_records_lock(tmp_path):
    claims = Claims(tmp_path)
    assert claims.try_claim("q")
    other = FileLock(str(tmp_path / "records.lock"))
    other.acquire()
    releasing = threading.Thread(target=claims.release, args=("q",))
    releasing.start()
    releasing.join(0.5)
    assert releasing.is_alive() and claims.path("q").exists()  # waits for the lock
    other.release()
    releasing.join(10)
    assert not releasing.is_alive() and not claims.path("q").exists()
