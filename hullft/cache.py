"""Content-hash keys and atomic writes for everything the harness caches on disk."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_root() -> Path:
    """Where built artefacts live: $HULLFT_CACHE, else <repo>/.cache."""
    return Path(os.environ.get("HULLFT_CACHE", REPO_ROOT / ".cache"))


def content_hash(*parts) -> str:
    """A short stable hash of JSON-serialisable parts (dicts, lists, strings, numbers)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def bytes_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (os.umask sets it to read it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(final: Path):
    """Yield a temporary path beside `final`; move it into place only if the block succeeds. The file gets
    the mode any file the user creates gets (mkstemp's is 0600: a group sharing a results folder could not
    read it)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~current_umask())
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(path: Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:32]


def _stat_memo(kind: str, path: Path) -> Path:
    """Where a digest of this version of the file (path, size, inode, modification time) is remembered; an
    edit in place or a replacement changes one of them."""
    st = Path(path).stat()
    return cache_root() / "digests" / content_hash(kind, str(Path(path).resolve()), st.st_size, st.st_ino,
                                                    st.st_mtime_ns)


def _remember(memo: Path, digest: str) -> None:
    with atomic_path(memo) as tmp:
        tmp.write_text(digest)


def source_digest(path: Path) -> str:
    """The content digest of a user's file (a corpus), hashed once per version of the file."""
    memo = _stat_memo("source", path)
    if memo.exists():
        return memo.read_text().strip()
    digest = file_digest(path)
    _remember(memo, digest)
    return digest


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def write_checksum(path: Path, digest: str) -> None:
    """Store the digest of the file now at `path` beside it, and remember it for this version of the file, so
    the stage that reads it next does not hash what was just hashed."""
    with atomic_path(checksum_path(path)) as tmp:
        tmp.write_text(digest)
    _remember(_stat_memo("verified", path), digest)


def verified_digest(path: Path) -> str:
    """The file's digest, checked against the one stored beside it when it was written; read once per version
    of the file (a job over a data space of many GB must not re-read it at every start). A file from before
    checksums were stored adopts its current digest."""
    stored = checksum_path(path)
    memo = _stat_memo("verified", path)
    if memo.exists() and stored.exists() and memo.read_text().strip() == stored.read_text().strip():
        return memo.read_text().strip()
    digest = file_digest(path)
    if not stored.exists():
        write_checksum(path, digest)
    elif stored.read_text().strip() != digest:
        raise ValueError(f"checksum mismatch: {path.name} changed since it was written")
    else:
        _remember(memo, digest)
    return digest
