"""model.dtype=auto: bf16 where the hardware computes it natively, fp32 elsewhere; precisions never share results."""
import pytest

from hullft import hardware
from hullft.compose import compose_config
from hullft.config import DType
from hullft.models import load_model, resolve_dtype
from hullft.records import RecordsOfAnotherRun
from hullft.runner import run_job
from hullft.scoring.base_score import BaseScoreCache


@pytest.mark.parametrize("native, expected", [(True, DType.bf16), (False, DType.fp32)])
def test_auto_follows_the_cpu_and_an_explicit_dtype_is_kept(monkeypatch, native, expected):
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: native)
    assert resolve_dtype(compose_config(["model=tiny", "model.dtype=auto"]).model) == expected
    assert load_model(compose_config(["model=tiny", "model.dtype=auto"]).model).dtype == expected
    for explicit in ("fp32", "bf16"):
        assert resolve_dtype(compose_config(["model=tiny", f"model.dtype={explicit}"]).model) == DType(explicit)


def test_auto_is_the_default_of_every_real_model():
    for model in ("smollm2-135m", "gpt2", "gpt2-large"):
        assert compose_config([f"model={model}"]).model.dtype == DType.auto


def test_bf16_and_fp32_never_share_a_base_score():
    paths = {BaseScoreCache(load_model(compose_config(["model=tiny", f"model.dtype={d}"]).model),
                            compose_config(["model=tiny"]).eval).path for d in ("fp32", "bf16")}
    assert len(paths) == 2


def test_bf16_and_fp32_never_share_a_record_directory(tmp_path, tiny_overrides, monkeypatch):
    """The same command (model.dtype=auto) on a CPU without and then with bf16: the second is refused, and the
    records name the precision they were measured in."""
    cfg = [*tiny_overrides, "queries_per_domain=1", "selector=nn", "budget=1", "model.dtype=auto"]
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    records = run_job(compose_config(cfg), tmp_path / "run")
    assert (records.dtype == "fp32").all()
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    with pytest.raises(RecordsOfAnotherRun, match="records of another config"):
        run_job(compose_config(cfg), tmp_path / "run")
    assert (run_job(compose_config(cfg), tmp_path / "bf16").dtype == "bf16").all()
