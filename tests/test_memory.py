"""Freed memory kept in the process (hullft/memory.py): a large tensor freed and allocated again is not
faulted in afresh; the user's glibc settings win. Each case runs in a fresh interpreter (the setting is per process)."""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")

PROBE = """
import resource, torch
from hullft.memory import keep_freed_memory
kept = keep_freed_memory() if {keep} else False
def faults_of_a_step():  # like a training step: large tensors written, then all freed (glibc settles
    # into reusing them after a few rounds: its aligned allocations do not fit the exact hole at first)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    [torch.ones(16 << 20), torch.ones(8 << 20)]  # 64 + 32 MB
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(kept, [faults_of_a_step() for _ in range(10)][-1])
"""


def probe(keep: bool, **env):
    out = subprocess.run([sys.executable, "-c", PROBE.format(keep=keep)], capture_output=True, text=True,
                         check=True, env={**os.environ, **env}).stdout.split()
    return out[0] == "True", int(out[1])


def test_a_freed_tensor_is_reused_without_page_faults():
    pages = (96 << 20) // os.sysconf("SC_PAGE_SIZE")
    kept, faults = probe(keep=True)
    assert kept and faults < pages // 100
    assert probe(keep=False) == (False, pytest.approx(pages, rel=0.2))  # glibc alone maps it afresh each time


def test_the_users_glibc_settings_win():
    pages = (96 << 20) // os.sysconf("SC_PAGE_SIZE")
    kept, faults = probe(keep=True, MALLOC_MMAP_MAX_="65536")
    assert not kept and faults == pytest.approx(pages, rel=0.2)
