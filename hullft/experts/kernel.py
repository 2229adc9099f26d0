"""The fused CPU merge (merge_kernel.cpp), built on first use for the CPU it runs on.

torch's cpp_extension compiles it with g++ and ninja (what inductor's CPU kernels need too) at -march=native into
torch's extensions folder, under a name holding a hash of the source, its build flags, torch's version and the
CPU's flags: built once per machine (25-50 s), and a home folder shared by different CPUs, or by two torch
versions, never loads a build made for another. It needs an x86 CPU with AVX2 and FMA (AVX-512 where there is, for
wider tiles); on other CPUs, or where the build fails (one log line saying why), the merge runs as torch's addmm and
a cast instead.
"""
from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path

import torch

from hullft.hardware import cpu_flags

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("merge_kernel.cpp")
# -fopenmp: at::parallel_for runs over torch's threads (its own libgomp, already loaded), not one thread
FLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-fopenmp"]
LINK_FLAGS = ["-fopenmp"]


@functools.cache
def fused_merge():
    """The built extension (`merge_into(weight, left, right, out)`), or None where it cannot run here."""
    flags = cpu_flags()
    if not {"avx2", "fma"} <= flags:
        return None
    # a new torch's ABI, other flags or another CPU: a build of its own
    built_for = " ".join([torch.__version__, *FLAGS, *LINK_FLAGS, *sorted(flags)])
    key = hashlib.sha256(SOURCE.read_bytes() + built_for.encode()).hexdigest()[:16]
    try:
        from torch.utils.cpp_extension import load  # needs setuptools
        return load(f"hullft_merge_{key}", [str(SOURCE)], extra_cflags=FLAGS, extra_ldflags=LINK_FLAGS)
    except Exception as error:  # no compiler or ninja, a read-only home: the merge still runs, unfused
        reason = (str(error).strip().splitlines() or [type(error).__name__])[-1]
        log.warning("method=merge: the fused CPU merge could not be built (%s); merging with torch's addmm", reason)
        return None
