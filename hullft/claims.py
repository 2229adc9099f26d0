"""Claims: how any number of workers running one config on one output directory share its queries.

Before a worker runs a query it claims it: a file claims/<hash of the query id>.json naming the worker (host,
pid, the pid's start time, a token), created and inspected only under the directory's records lock, so two
workers never hold one query. While a worker runs, a thread touches its claim files every HEARTBEAT seconds.
A claim is taken over when its holder is gone:
- on the same host, at once, when its pid no longer runs (or now names another process: the start time);
- from another host (an NFS-shared results folder), when its file has not been touched for STALE_AFTER
  seconds. Hosts' clocks must agree to within that bound; a worker that is suspended longer loses its claims
  and its query may be run twice (the second copy's records are then not written: RecordStore.append_query).
A query is released when its records are written, or when the worker stops (an exception, SIGTERM, Ctrl-C).
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Dict, Optional, Set

HEARTBEAT = 30.0
STALE_AFTER = 300.0


def process_start(pid: int) -> Optional[str]:
    """The pid's start time in clock ticks since boot (field 22 of /proc/<pid>/stat), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _pid_runs(pid: int, started: Optional[str]) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it runs
    now = process_start(pid)
    return started is None or now is None or now == started


class Claims:
    def __init__(self, out_dir: Path, heartbeat: float = HEARTBEAT, stale_after: float = STALE_AFTER):
        self.dir = Path(out_dir) / "claims"
        self.heartbeat, self.stale_after = heartbeat, stale_after
        self.me = {"host": socket.gethostname(), "pid": os.getpid(), "started": process_start(os.getpid()),
                   "token": uuid.uuid4().hex}
        self.held: Set[Path] = set()
        self._stop = threading.Event()
        self._beat: Optional[threading.Thread] = None

    def path(self, query_id: str) -> Path:
        return self.dir / f"{hashlib.sha256(str(query_id).encode()).hexdigest()[:24]}.json"

    def holder_alive(self, path: Path) -> bool:
        """Whether the claim at `path` is held by a live worker (call under the records lock)."""
        try:
            holder: Dict = json.loads(path.read_text())
            touched = path.stat().st_mtime
        except (OSError, ValueError):
            return False  # gone, or a file torn by a crash while it was written: nobody holds it
        if holder.get("token") == self.me["token"]:
            return True
        if holder.get("host") == self.me["host"]:
            return _pid_runs(int(holder.get("pid", -1)), holder.get("started"))
        return time.time() - touched < self.stale_after

    def try_claim(self, query_id: str) -> bool:
        """Claim the query unless a live worker holds it (call under the records lock)."""
        path = self.path(query_id)
        if path in self.held or self.holder_alive(path):
            return False
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{self.me['token']}")
        tmp.write_text(json.dumps({**self.me, "query_id": str(query_id), "claimed": time.time()}))
        os.replace(tmp, path)
        self.held.add(path)
        return True

    def release(self, query_id: str) -> None:
        self._let_go(self.path(query_id))

    def release_all(self) -> None:
        for path in list(self.held):
            self._let_go(path)

    def _let_go(self, path: Path) -> None:
        """Remove our claim file, unless another worker has taken the query over (we were thought dead)."""
        if path not in self.held:
            return
        self.held.discard(path)
        try:
            if json.loads(path.read_text()).get("token") == self.me["token"]:
                path.unlink()
        except (OSError, ValueError):
            pass

    def _touch_held(self) -> None:
        while not self._stop.wait(self.heartbeat):
            for path in list(self.held):
                try:
                    os.utime(path)
                except OSError:
                    pass

    def __enter__(self) -> "Claims":
        self._beat = threading.Thread(target=self._touch_held, name="claims-heartbeat", daemon=True)
        self._beat.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.release_all()
        try:
            self.dir.rmdir()  # the last worker out leaves no empty claims/ behind
        except OSError:
            pass
