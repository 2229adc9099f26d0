"""Claims: how any number of workers running one config on one output directory share its queries.

Before a worker runs a query it claims it: a file claims/<hash of the query id>.json naming the worker (host,
pid, the pid's start time, a token), created and inspected only under the directory's records lock, so two
workers never hold one query. While a worker runs, a thread touches its claim files every HEARTBEAT seconds.
A claim is taken over when its holder is gone:
- on the same host, at once, when its pid no longer runs (or now names another process: the start time). The
  same host means the same hostname, boot id and pid namespace: two containers sharing a hostname (separate
  pid namespaces) never judge each other's pids, and fall back to the heartbeat;
- from another host (an NFS-shared results folder), or another pid namespace, when its file has not been
  touched for STALE_AFTER seconds. Hosts' clocks must agree to within that bound; a worker that is suspended longer loses its claims
  and its query may be run twice (the second copy's records are then not written: RecordStore.append_query);
- from anywhere, when its holder is alive but stuck: no progress (no record written, no training step, no scoring
  window: hullft/progress.py) for STUCK_AFTER seconds (30 minutes). The heartbeat also sets the mtime of the
  worker's claims/progress-<token> file to its last progress; the take-over is one log line naming the holder.
A query is released (under the records lock) when its records are written, or when the worker stops (an
exception, SIGTERM, Ctrl-C).

`next_block` hands a worker its next queries: a few at a time (guided: at most a quarter of what is left while
others hold claims, so the workers finish together), and, once every query left is held by others, waits for
them to be recorded or for a holder to die (then runs its query): a worker exits only when every query of its
directory is recorded, so no query is left behind by workers that all finished early.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
import logging
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Set

from filelock import FileLock

from hullft import progress
from hullft.signals import uninterrupted

log = logging.getLogger(__name__)

HEARTBEAT = 30.0
STALE_AFTER = 300.0
STUCK_AFTER = 1800.0  # seconds a live holder may go without progress before its queries are taken over
WAIT_POLL = 5.0  # seconds between looks at the claims of the queries other workers hold


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


def _boot_id() -> Optional[str]:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _pid_namespace() -> Optional[str]:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


class Claims:
    def __init__(self, out_dir: Path, heartbeat: float = HEARTBEAT, stale_after: float = STALE_AFTER,
                 stuck_after: float = STUCK_AFTER, lock: Optional[FileLock] = None):
        self.dir = Path(out_dir) / "claims"
        self.heartbeat, self.stale_after, self.stuck_after = heartbeat, stale_after, stuck_after
        self.lock = lock or FileLock(str(Path(out_dir) / "records.lock"))  # the RecordStore's lock file
        self.me = {"host": socket.gethostname(), "boot": _boot_id(), "pid_ns": _pid_namespace(), "pid": os.getpid(),
                   "started": process_start(os.getpid()), "token": uuid.uuid4().hex}
        self.held: Set[Path] = set()
        self._stop = threading.Event()
        self._beat: Optional[threading.Thread] = None

    def path(self, query_id: str) -> Path:
        return self.dir / f"{hashlib.sha256(str(query_id).encode()).hexdigest()[:24]}.json"

    def progress_path(self, token: str) -> Path:
        return self.dir / f"progress-{token}"

    def _stuck_for(self, holder: Dict) -> float:
        """Seconds since the holder of a claim last made progress (or claimed it, if later)."""
        since = float(holder.get("claimed", time.time()))  # a claim that does not say when: judged by progress
        try:
            since = max(since, self.progress_path(str(holder.get("token"))).stat().st_mtime)
        except OSError:
            pass
        return time.time() - since

    def holder_alive(self, path: Path) -> bool:
        """Whether the claim at `path` is held by a live worker (call under the records lock)."""
        try:
            holder: Dict = json.loads(path.read_text())
            touched = path.stat().st_mtime
        except (OSError, ValueError):
            return False  # gone, or a file torn by a crash while it was written: nobody holds it
        if holder.get("token") == self.me["token"]:
            return True
        if all(holder.get(k) == self.me[k] and self.me[k] is not None for k in ("host", "boot", "pid_ns")):
            alive = _pid_runs(int(holder.get("pid", -1)), holder.get("started"))
        else:
            alive = time.time() - touched < self.stale_after
        stuck = self._stuck_for(holder)
        if alive and stuck > self.stuck_after:
            log.warning("query %s: its holder %s:%s (worker %s) is alive but has made no progress (no record, no "
                        "step) for %.0f s, over the %.0f s limit; taking it over", holder.get("query_id"),
                        holder.get("host"), holder.get("pid"), str(holder.get("token"))[:8], stuck, self.stuck_after)
            return False
        return alive

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

    def claim_block(self, store, queries, size: int):
        """Up to `size` of `queries` (rows with doc_id) that nobody has recorded or holds, claimed for this worker;
        and how many others hold. While others hold claims a block is at most a quarter of what is left."""
        with uninterrupted(), store.lock:
            store.refresh()
            undone = queries[~queries.doc_id.isin(store.done)]
            if any(self.path(q).exists() and self.path(q) not in self.held for q in undone.doc_id):
                size = min(size, max(1, -(-len(undone) // 4)))
            block: List = []
            held = 0
            for query in undone.itertuples():
                if len(block) < size and self.try_claim(query.doc_id):
                    block.append(query)
                elif self.path(query.doc_id) not in self.held:
                    held += 1
        return block, held

    def next_block(self, store, queries, size: int) -> List:
        """The next block to run; [] only when every query is recorded. Waits while all that is left is held by
        other live workers."""
        waited = False
        while True:
            block, held = self.claim_block(store, queries, size)
            if block or not held:
                return block
            if not waited:
                log.info("%d queries are held by other workers: waiting until they are recorded, or running them "
                         "if their holders die", held)
                waited = True
            time.sleep(WAIT_POLL)

    def release(self, query_id: str) -> None:
        progress.mark()  # its records are written
        with uninterrupted(), self.lock:
            self._let_go(self.path(query_id))

    def release_all(self) -> None:
        with uninterrupted(), self.lock:
            for path in list(self.held):
                self._let_go(path)

    def _let_go(self, path: Path) -> None:
        """Remove our claim file, unless another worker has taken the query over (we were thought dead or stuck);
        call under the records lock."""
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
            self._beat_once()

    def _beat_once(self) -> None:
        """Our claims are alive (their mtime now), and our last progress is published."""
        for path in list(self.held):
            try:
                os.utime(path)
            except OSError:
                pass
        if self.held:
            try:
                last = progress.last()
                mine = self.progress_path(self.me["token"])
                mine.touch()
                os.utime(mine, (last, last))
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
            self.progress_path(self.me["token"]).unlink(missing_ok=True)
            self.dir.rmdir()  # the last worker out leaves no empty claims/ behind
        except OSError:
            pass
