"""The fused CPU merge (fused_merge.cpp), built on first use for the CPU it runs on.

torch's cpp_extension compiles it with g++ and ninja (the `ninja` package, a dependency) at -march=native into
$HULLFT_CACHE/extensions, under a name holding a hash of the source, its build flags, torch's version and the CPU's
flags: built once per machine (25-50 s), and a cache shared by different CPUs, or by two torch versions, never
loads a build made for another. It needs an x86 CPU with AVX2 and FMA (AVX-512 where there is, for wider tiles).

A build cannot hang a job: it runs under a `filelock` lock beside its folder, which the system releases when its
holder dies (torch's own lock file, which a killed build leaves behind and every later build would wait on forever,
is removed by whoever holds ours); a job waits at most BUILD_WAIT seconds for another process's build. Where the
build fails or is not waited for (no compiler, a read-only cache, a build killed midway, another CPU), one log line
says why and the merge runs as torch's addmm and a cast instead (`path` "torch" in every record of the job).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
from pathlib import Path
from typing import Optional

import torch
from filelock import FileLock, Timeout

from hullft.cache import cache_root
from hullft.hardware import cpu_flags

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("fused_merge.cpp")
# -fopenmp: at::parallel_for runs over torch's threads (its own libgomp, already loaded), not one thread
FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-fopenmp")
LINK_FLAGS = ("-fopenmp",)  # tuples: torch's load extends the lists it is given
BUILD_WAIT = 600.0  # seconds a job waits for another process's build before merging with torch's addmm


class FusedMerge:
    """The built extension, with its inputs checked: out = weight + left @ right (out may be weight itself)."""

    def __init__(self, extension):
        self.extension = extension

    def merge_into(self, weight: torch.Tensor, left: torch.Tensor, right: torch.Tensor, out: torch.Tensor) -> None:
        for name, t in (("weight", weight), ("left", left), ("right", right), ("out", out)):
            if t.device.type != "cpu":
                raise ValueError(f"fused merge: {name} is on {t.device}; the fused merge runs on CPU tensors only")
            if not t.is_contiguous():
                raise ValueError(f"fused merge: {name} is not contiguous; pass {name}.contiguous()")
            if t.dim() != 2:
                raise ValueError(f"fused merge: {name} has {t.dim()} dimensions; it takes matrices")
            if name != "out" and t.dtype != torch.float32:
                raise ValueError(f"fused merge: {name} is {t.dtype}; weight, left and right are float32")
        if out.dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"fused merge: out is {out.dtype}; it must be float32 or bfloat16")
        if left.shape[0] != weight.shape[0] or right.shape[1] != weight.shape[1] or left.shape[1] != right.shape[0]:
            raise ValueError(f"fused merge: left {tuple(left.shape)} @ right {tuple(right.shape)} does not make "
                             f"weight's shape {tuple(weight.shape)}")
        if out.shape != weight.shape:
            raise ValueError(f"fused merge: out {tuple(out.shape)} is not weight's shape {tuple(weight.shape)}")
        self.extension.merge_into(weight, left, right, out)


def build_name() -> str:
    """The extension's name for this source, these flags, this torch and this CPU."""
    built_for = " ".join([torch.__version__, *FLAGS, *LINK_FLAGS, *sorted(cpu_flags())])
    return "hullft_merge_" + hashlib.sha256(SOURCE.read_bytes() + built_for.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _ninja_on_path():
    """torch's cpp_extension runs `ninja` from PATH: the `ninja` package's, where a venv's bin is not on it."""
    try:
        import ninja
        bin_dir = ninja.BIN_DIR
    except ImportError:
        bin_dir = None
    before = os.environ.get("PATH", "")
    if bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + before
    try:
        yield
    finally:
        os.environ["PATH"] = before


def build(root: Optional[Path] = None, wait: float = BUILD_WAIT) -> Optional[FusedMerge]:
    """Build (or load) the extension under root (default $HULLFT_CACHE/extensions); None, with one log line saying
    why, where it cannot run here."""
    if not {"avx2", "fma"} <= cpu_flags():
        return None
    name = build_name()
    try:
        folder = Path(root or cache_root() / "extensions") / name
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder) + ".lock", timeout=wait):
            (folder / "lock").unlink(missing_ok=True)  # torch's baton, left by a killed build: nobody else builds
            from torch.utils.cpp_extension import load  # needs setuptools
            with _ninja_on_path():
                extension = load(name, [str(SOURCE)], extra_cflags=list(FLAGS), extra_ldflags=list(LINK_FLAGS),
                                 build_directory=str(folder))
        return FusedMerge(extension)
    except Timeout:
        reason = f"another process has held its build lock for {wait:.0f} s"
    except Exception as error:  # no compiler, a read-only cache, a broken build: the merge still runs, unfused
        reason = (str(error).strip().splitlines() or [type(error).__name__])[-1]
    log.warning("method=merge: the fused CPU merge could not be built (%s); merging with torch's addmm", reason)
    return None


@functools.cache
def fused_merge() -> Optional[FusedMerge]:
    """The process's fused merge (built once per process), or None where it cannot run here."""
    return build()
