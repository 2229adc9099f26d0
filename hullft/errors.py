"""The one place that turns a user's mistake or a machine's fault into one line: every CLI goes through here.

An error the user can fix (a config value, a missing or unreadable file, a full disk, a corrupt output) is
printed as `error: <what>, <where>; <fix>` and the program exits with status 1. Anything else is a bug in
the harness and keeps its traceback.
"""
from __future__ import annotations

import errno
import sys
from contextlib import contextmanager
from typing import Iterator, List, Optional


class UserError(ValueError):
    """A problem the user can fix; its message names the field or path and the fix."""


class ConfigError(UserError):
    """One or more config problems, one line each."""

    def __init__(self, problems: List[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


_OS_FIXES = {
    errno.EACCES: "permission denied: make it writable/readable, or choose another path",
    errno.EPERM: "operation not permitted: choose another path",
    errno.EROFS: "read-only file system: choose a writable path",
    errno.ENOSPC: "no space left on the device: free space or choose another disk",
    errno.EDQUOT: "disk quota exceeded: free space or choose another disk",
    errno.EISDIR: "is a directory: give a file",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.ENOENT: "does not exist and cannot be created there",
}


def _os_line(e: OSError) -> str:
    where = e.filename if e.filename is not None else "a file"
    what = _OS_FIXES.get(e.errno, e.strerror or type(e).__name__)
    return f"{where}: {what}"


def user_message(e: BaseException) -> Optional[str]:
    """The one-line message for an error the user can fix, or None for a bug."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException
    from pyarrow import ArrowException

    from hullft.models import ModelNotAvailable

    if isinstance(e, ConfigError):
        return "\n".join(e.problems)
    if isinstance(e, (HydraException, OmegaConfBaseException)):
        first = str(e).strip().splitlines()[0]
        if getattr(e, "options", None):  # a group option that does not exist
            return f"{first}; choose one of: {', '.join(e.options)}"
        cause = e.__cause__
        if isinstance(cause, OmegaConfBaseException) and str(cause).strip():
            return f"{first} {str(cause).strip().splitlines()[0]}"
        return first
    if isinstance(e, (UserError, ModelNotAvailable, FileNotFoundError)) and not getattr(e, "errno", None):
        return str(e)
    if isinstance(e, OSError):
        return _os_line(e)
    if isinstance(e, UnicodeDecodeError):
        return f"a file that should be UTF-8 text is not ({e.reason} at byte {e.start}); is it binary?"
    if isinstance(e, ArrowException):
        return f"a parquet file is unreadable ({str(e).splitlines()[0]}); delete it or rerun the job to rewrite it"
    if isinstance(e, (ValueError, RuntimeError)):  # our own checks raise these with a one-line message
        return str(e).splitlines()[0] if str(e) else None
    return None


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Around a CLI's body: user errors exit with `error: ...` lines, bugs keep their traceback."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - sorted by user_message below
        line = user_message(e)
        if line is None:
            raise
        sys.exit("\n".join(f"error: {part}" for part in line.splitlines()))
