"""The harness as an lm-eval model: lm-eval's bits_per_byte equals the harness's own, its loglikelihoods equal
HFLM's, and a document never adapts on itself."""
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hullft.compose import compose_config
from hullft.lm_eval import tasks
from hullft.lm_eval.tasks import write_rolling_task, write_task
from hullft.runner import run_job

REPO = Path(__file__).resolve().parent.parent
CHOICE_TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def held_out_documents(overrides):
    """The job's query documents (held out of the pool), but the licences', which share long passages."""
    documents = tasks.held_out_documents(overrides)
    return documents[documents.domain != "Licenses"]


@pytest.mark.parametrize("method", [["method=none"], ["method=finetune", "selector=nn", "budget=2"]])
def test_lm_evals_bits_per_byte_is_the_harness_byte_weighted_bpb(tmp_path, tiny_overrides, method):
    overrides = [*tiny_overrides, *method]
    docs = held_out_documents(overrides)
    tasks = write_rolling_task(tmp_path / "tasks", "heldout", docs.text)
    proc = subprocess.run([sys.executable, "-m", "hullft.lm_eval", "--tasks", "heldout", "--include_path", str(tasks),
                           "--output_path", str(tmp_path / "out"), *overrides], cwd=tmp_path, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    lm_evals = results["results"]["heldout"]["bits_per_byte,none"]
    from hullft.report.loading import load_records
    records = load_records([tmp_path / "out" / "records"]).set_index("query_id")
    assert lm_evals == pytest.approx(records.nll_nats.sum() / math.log(2) / records.query_bytes.sum(), rel=1e-6)
    ours = run_job(compose_config(overrides), tmp_path / "run").set_index("query_id").loc[docs.doc_id]
    clean = (records.leaked == 0).to_numpy()  # where the leakage screen dropped nothing, run.py's own numbers
    assert clean.sum() >= 2
    np.testing.assert_allclose(records.nll_nats.to_numpy()[clean], ours.nll_nats.to_numpy()[clean], rtol=1e-6)
    if clean.all():
        assert lm_evals == pytest.approx(ours.nll_nats.sum() / math.log(2) / ours.query_bytes.sum(), rel=1e-6)
    assert "documents had retrieved pool sequences overlapping them" in proc.stderr


def test_loglikelihoods_and_accuracy_equal_hflms(tmp_path, tiny_overrides):
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from hullft.lm_eval.model import HullftLM

    rows = [{"question": "The licence grants you the right to", "choices": [" copy.", " sing.", " fly away."],
             "answer": 0},
            {"question": "def add(a, b):\n    return", "choices": [" a + b", " None", " 42"], "answer": 0},
            {"question": "In the beginning", "choices": [" God created", " was the word", " x"], "answer": 1}]
    tasks = write_task(tmp_path / "tasks", "choices", CHOICE_TASK, rows)
    ours = HullftLM([*tiny_overrides, "method=none", "eval.prefix_token=bos"], records=str(tmp_path / "records"))
    loaded = ours.job.loaded
    theirs = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=1, add_bos_token=False)
    got = {}
    for name, lm in (("ours", ours), ("hflm", theirs)):
        out = lm_eval.simple_evaluate(model=lm, tasks=["choices"], task_manager=lm_eval.tasks.TaskManager(
            include_path=str(tasks)), log_samples=True)
        got[name] = out
    mine = [r for s in got["ours"]["samples"]["choices"] for r in s["resps"]]
    hers = [r for s in got["hflm"]["samples"]["choices"] for r in s["resps"]]
    np.testing.assert_allclose([float(r[0][0]) for r in mine], [float(r[0][0]) for r in hers], atol=1e-5, rtol=1e-5)
    assert [r[0][1] for r in mine] == [r[0][1] for r in hers]
    assert got["ours"]["results"]["choices"]["acc,none"] == got["hflm"]["results"]["choices"]["acc,none"]


def test_a_document_planted_in_the_pool_is_never_selected_for_itself(tmp_path, tiny_overrides, monkeypatch):
    from hullft.lm_eval import model as lm_model
    from hullft.lm_eval.leakage import overlaps
    from hullft.per_query import QueryRun

    seen = []

    class Watched(QueryRun):
        def records(self):
            self.select()
            seen.append((self.rows.copy(), self.plans[0][0]))
            return super().records()

    monkeypatch.setattr(lm_model, "QueryRun", Watched)
    lm = lm_model.HullftLM([*tiny_overrides, "method=finetune", "selector=nn", "budget=4"],
                           records=str(tmp_path / "records"))
    pool, tokenizer = lm.job.space.pool, lm.job.loaded.tokenizer
    planted = tokenizer.decode(pool.tokens(0) + pool.tokens(1))  # a pool document's text, verbatim
    document = tokenizer(planted, add_special_tokens=False).input_ids
    request = SimpleNamespace(args=(planted,), task_name="planted", doc_id=0, request_type="loglikelihood_rolling")
    lm.loglikelihood_rolling([request])
    rows, selection = seen[0]
    chosen = set(rows[selection.indices].tolist())
    assert not chosen & {0, 1}  # the planted document's own sequences
    size = lm._run_length(planted)
    assert not any(overlaps(document, pool.tokens(r), size) for r in chosen)
    assert lm.job.store.frame().leaked.iloc[0] >= 1
    _, nearest = lm.job.space.search(
        QueryRun(SimpleNamespace(doc_id="x", domain="x", text=planted), lm.cfg, lm.job.space, lm.job.loaded,
                 lm.job.embedder, lm.job.selector, lm.engine, lm.base).q, 4)
    assert set(nearest.tolist()) & {0, 1}  # without the screen, nn would have taken them


def test_methods_that_cannot_serve_a_request_type_say_so(tmp_path, tiny_overrides):
    from hullft.errors import UserError
    from hullft.lm_eval.model import HullftLM

    lm = HullftLM([*tiny_overrides, "method=dynamic_eval", "checkpoints=[]"], records=str(tmp_path / "records"))
    request = SimpleNamespace(args=("Hello", {"until": ["\n"]}), task_name="gen", doc_id=0)
    with pytest.raises(UserError, match="method=dynamic_eval cannot serve generate_until requests"):
        lm.generate_until([request])
    empty = SimpleNamespace(args=("   ",), task_name="empty", doc_id=3)
    with pytest.raises(UserError, match="task empty: document 3 is empty"):
        lm.loglikelihood_rolling([empty])


def test_generation_after_adapting_on_the_prompt(tmp_path, tiny_overrides):
    from hullft.lm_eval.model import HullftLM

    lm = HullftLM([*tiny_overrides, "method=finetune", "selector=nn", "budget=2"], records=str(tmp_path / "records"))
    request = SimpleNamespace(args=("The licence grants", {"until": ["\n"], "max_gen_toks": 8}), task_name="gen",
                              doc_id=0)
    (text,) = lm.generate_until([request])
    assert isinstance(text, str) and "\n" not in text
    record = lm.job.store.frame().iloc[0]
    assert record.query_id == "gen/0" and record.opt_steps == 2


def test_the_tasks_command_writes_a_configs_query_documents(tmp_path, tiny_overrides, capsys):
    tasks.main(["--out", str(tmp_path / "tasks"), "--name", "mine", *tiny_overrides])
    rows = [json.loads(line) for line in (tmp_path / "tasks" / "mine.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == tasks.held_out_documents(tiny_overrides).text.tolist()
    assert "task: mine" in (tmp_path / "tasks" / "mine.yaml").read_text() and "wrote 6 documents" in capsys.readouterr().out
