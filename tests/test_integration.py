"""The whole TTFT loop on the real embedded model and embedder (small corpus, short sequences)."""
import numpy as np
import pytest

from hullft.compose import compose_config
from hullft.records import COLUMNS
from hullft.runner import run_job


@pytest.mark.integration
def test_real_model_end_to_end(tmp_path, pile_fixture):
    cfg = compose_config(["data=jsonl", f"data.path={pile_fixture}", "data.max_length=128", "data.max_doc_chars=1500",
                          "data.max_pool_per_domain=60", "data.query_fraction=0.2", "k=30", "budget=3",
                          "queries_per_domain=1", "eval.window=512", "engine.lr=1e-4"])
    records = run_job(cfg, tmp_path)
    assert len(records) == 3 and set(COLUMNS) <= set(records.columns)
    assert records.bpb_base.between(0.2, 2.0).all() and np.isfinite(records.bpb).all()
    assert (records.opt_steps == 3).all() and not records.diverged.any()
    assert (records.bpb != records.bpb_base).all()  # finetuning changed the model
    assert (records.t_total > records.t_finetune).all() and (records.t_finetune > 0).all()
    again = run_job(cfg, tmp_path)                  # a rerun finds every query done
    assert again.query_id.tolist() == records.query_id.tolist()
