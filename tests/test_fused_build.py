"""The fused merge's build never hangs a job: each way it can fail falls back to torch's addmm in one line, and a
build killed midway leaves nothing that stops the next one. Its inputs are checked before it runs."""
import logging
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from filelock import FileLock

from hullft.experts import fused_merge as fused
from hullft.experts import merging
from hullft.hardware import cpu_flags

needs_avx2 = pytest.mark.skipif(not {"avx2", "fma"} <= cpu_flags(), reason="the fused merge needs AVX2 and FMA")


def fallback_lines(caplog):
    return [r.getMessage() for r in caplog.records if "could not be built" in r.getMessage()]


def no_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    return tmp_path / "extensions"


def unwritable_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a folder cannot be made under a file, whoever runs the test (root included)
    return blocker / "extensions"


@needs_avx2
@pytest.mark.parametrize("failure", [no_compiler, unwritable_cache])
def test_a_failed_build_falls_back_in_one_line(tmp_path, monkeypatch, caplog, failure):
    root = failure(tmp_path, monkeypatch)
    with caplog.at_level(logging.WARNING):
        assert fused.build(root) is None
    assert len(fallback_lines(caplog)) == 1


@needs_avx2
def test_a_build_held_by_another_process_is_waited_for_a_bounded_time(tmp_path, caplog):
    root = tmp_path / "extensions"
    (root / fused.build_name()).mkdir(parents=True)
    with FileLock(str(root / fused.build_name()) + ".lock"), caplog.at_level(logging.WARNING):
        start = time.monotonic()
        assert fused.build(root, wait=0.5) is None
        assert time.monotonic() - start < 30
    assert "another process has held its build lock" in fallback_lines(caplog)[0]


BUILD = textwrap.dedent("""
    import sys, torch
    from hullft.experts.fused_merge import build
    merge = build(sys.argv[1])
    weight, left, right = torch.randn(8, 64), torch.randn(8, 2), torch.randn(2, 64)
    out = torch.empty_like(weight)
    merge.merge_into(weight, left, right, out)
    torch.testing.assert_close(out, weight + left @ right)
    print("built")
""")


@needs_avx2
def test_a_build_killed_midway_does_not_stop_the_next(tmp_path):
    """A build killed after a few seconds (as by the OOM killer) leaves torch's lock file behind; the next build
    removes it under its own lock and completes (it used to wait on it forever)."""
    root = tmp_path / "extensions"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    killed = subprocess.Popen([sys.executable, "-c", BUILD, str(root)], env=env, start_new_session=True)
    baton = root / fused.build_name() / "lock"
    deadline = time.monotonic() + 60
    while not baton.exists() and time.monotonic() < deadline and killed.poll() is None:
        time.sleep(0.1)
    assert baton.exists(), "the build never started"
    os.killpg(killed.pid, 9)
    killed.wait()
    assert baton.exists()  # what a killed build leaves
    done = subprocess.run([sys.executable, "-c", BUILD, str(root)], env=env, capture_output=True, text=True,
                          timeout=400)
    assert done.returncode == 0 and "built" in done.stdout, done.stderr[-2000:]


class Recorder:
    def __init__(self):
        self.calls = 0

    def merge_into(self, *tensors):
        self.calls += 1


@pytest.mark.parametrize("change, words", [
    (lambda w, l, r, o: (w.to("meta"), l, r, o), "weight is on meta"),
    (lambda w, l, r, o: (w, l, r, o.to("meta")), "out is on meta"),
    (lambda w, l, r, o: (w.t(), l, r, o), "weight is not contiguous"),
    (lambda w, l, r, o: (w, l.double(), r, o), "left is torch.float64"),
    (lambda w, l, r, o: (w, l, r[:, :-1].contiguous(), o), "does not make weight's shape"),
    (lambda w, l, r, o: (w, l[:-1].contiguous(), r, o), "does not make weight's shape"),
    (lambda w, l, r, o: (w, l, r, o[:-1]), "out (7, 16) is not weight's shape"),
    (lambda w, l, r, o: (w, l, r, o.half()), "out is torch.float16"),
    (lambda w, l, r, o: (w, l[None], r, o), "left has 3 dimensions"),
])
def test_merge_into_names_what_is_wrong(change, words):
    extension = Recorder()
    merge = fused.FusedMerge(extension)
    good = (torch.zeros(8, 16), torch.zeros(8, 2), torch.zeros(2, 16), torch.zeros(8, 16, dtype=torch.bfloat16))
    merge.merge_into(*good)
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        merge.merge_into(*change(*good))
    assert extension.calls == 1


def test_without_the_fused_merge_the_merge_runs_through_torch_and_says_so(monkeypatch):
    from transformers import GPT2Config, GPT2LMHeadModel

    monkeypatch.setattr(merging, "fused_merge", lambda: None)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    key = "base_model.model.transformer.h.0.attn.c_attn"
    adapter = {f"{key}.lora_A.weight": torch.randn(2, 16), f"{key}.lora_B.weight": torch.randn(48, 2)}
    adapters = merging.MergedAdapters(model, [adapter], [1.0])
    assert adapters.fused is None and adapters.path == "torch"
    before = model.transformer.h[0].attn.c_attn.weight.detach().clone()
    adapters.add([0], [1.0])
    assert not torch.equal(model.transformer.h[0].attn.c_attn.weight, before)
    adapters.restore()
    assert torch.equal(model.transformer.h[0].attn.c_attn.weight, before)
