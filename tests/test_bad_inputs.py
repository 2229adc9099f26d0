"""Bad inputs and faults, tried the way a new user meets them: each ends in one clear line (or a correct run),
never a traceback, never an old result returned for changed data, never a half-written directory.

Config cases are checked in-process (the same pass run.py makes first); files, caches, output directories
and sweeps through the real CLIs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zstandard

from hullft.compose import compose_config
from tests.oracles import build_documents
from hullft.errors import UserError, user_message
from hullft.data.jsonl import read_pile_jsonl
from hullft.records import RecordsOfAnotherRun
from hullft.runner import run_job
from hullft.validate import check_writable, config_problems

REPO = Path(__file__).resolve().parent.parent

# (overrides, text the one line must hold): ranges, combinations, unknown keys
CONFIG_CASES = [
    (["budget=0"], "budget=0: must be a positive"),
    (["budget=-3"], "budget=-3"),
    (["k=0"], "k=0: must be a positive"),
    (["k=3"], "k=3 < budget=4"),
    (["queries_per_domain=-1"], "queries_per_domain=-1"),
    (["queries_per_domain=0"], "queries_per_domain=0"),
    (["num_shards=0"], "num_shards=0"),
    (["shard=-1"], "shard=-1"),
    (["shard=2"], "shard=2: must lie in [0, num_shards=1)"),
    (["+budgt=4"], "+budgt: not a setting of this harness; did you mean budget"),
    (["+engine.lrr=1e-3"], "did you mean engine.lr"),
    (["+data.pathh=x"], "did you mean data.path"),
    (["engine.lr=nan"], "engine.lr=nan: must be a finite learning rate"),
    (["engine.lr=inf"], "engine.lr=inf"),
    (["engine.lr=0"], "engine.lr=0"),
    (["engine.lr=-1e-4"], "engine.lr=-0.0001"),
    (["engine.eps=0"], "engine.eps=0"),
    (["engine.weight_decay=-0.1"], "engine.weight_decay=-0.1"),
    (["engine.max_grad_norm=0"], "engine.max_grad_norm=0"),
    (["engine.refresh_interval=0"], "engine.refresh_interval=0"),
    (["engine.batch_size=0"], "engine.batch_size=0"),
    (["engine.lora_r=0"], "engine.lora_r=0"),
    (["engine.bucket=0"], "engine.bucket=0"),
    (["engine.cuda_graphs=sometimes"], "engine.cuda_graphs=sometimes: must be auto, true or false"),
    (["eval.window=0"], "eval.window=0"),
    (["eval.window=-1"], "eval.window=-1"),
    (["eval.prefix=false"], "eval.prefix=false applies to eval=first_window only"),
    (["eval.bytes=scored"], "eval.bytes=scored applies to eval=first_window only"),
    (["data.max_length=1"], "data.max_length=1"),
    (["data.min_length=0"], "data.min_length=0"),
    (["data.min_length=300"], "data.min_length=300 > data.max_length=256"),
    (["data.query_fraction=0"], "data.query_fraction=0.0"),
    (["data.query_fraction=1"], "data.query_fraction=1.0"),
    (["data.max_doc_chars=0"], "data.max_doc_chars=0"),
    (["data.max_pool_per_domain=0"], "data.max_pool_per_domain=0"),
    (["data.max_docs_per_domain=-5"], "data.max_docs_per_domain=-5"),
    (["data.max_docs_per_source=0"], "data.max_docs_per_source=0"),
    (["data.ivf_nlist=0"], "data.ivf_nlist=0"),
    (["data.ivf_nprobe=0"], "data.ivf_nprobe=0"),
    (["data.index_rerank=-1"], "data.index_rerank=-1"),
    (["data.index_rerank=50"], "data.index_rerank=50 < k=200"),
    (["data.index_part_rows=-5"], "data.index_part_rows=-5"),
    (["data.hnsw_m=1"], "data.hnsw_m=1"),
    (["embedder.max_tokens=0"], "embedder.max_tokens=0"),
    (["embedder.batch_size=0"], "embedder.batch_size=0"),
    (["embedder.batch_tokens=0"], "embedder.batch_tokens=0"),
    (["model.device=gpu"], "model.device=gpu: must be auto, cpu, cuda"),
    (["embedder.device=tpu"], "embedder.device=tpu"),
    (["logger.mode=loud"], "logger.mode=loud"),
    (["tag=a/b"], "tag='a/b'"),
    (["model=tiny", "model.n_head=3"], "model.n_embd=64 is not a multiple of model.n_head=3"),
    (["data=jsonl"], "data.path is empty"),
    (["data=jsonl", "data.path=/nonexistent/corpus.jsonl"], "data.path=/nonexistent/corpus.jsonl does not exist"),
    (["data=jsonl", "data.path=/sys"], "data.path=/sys is a folder with no .jsonl or .jsonl.zst file in it"),
    (["data=jsonl", "data.path=/etc/hostname"], "expected a file ending in .jsonl or .jsonl.zst"),
    (["data.domains=[kjv,FreeLaw]"], "data.domains names unknown domain(s) ['FreeLaw']"),
    (["model=gpt2", "model.hub_id=./no/such/model"], "model.hub_id=./no/such/model: no such directory"),
    (["embedder.kind=hub", "embedder.hub_id=/no/such/embedder"], "embedder.hub_id=/no/such/embedder"),
]


@pytest.mark.parametrize("overrides, line", CONFIG_CASES, ids=[" ".join(o) for o, _ in CONFIG_CASES])
def test_each_bad_config_value_is_one_line_naming_the_field(overrides, line):
    problems = config_problems(compose_config(overrides))
    assert any(line in p for p in problems), problems
    assert all("\n" not in p for p in problems)


def test_every_problem_is_reported_at_once_and_the_defaults_have_none():
    assert config_problems(compose_config([])) == []
    problems = config_problems(compose_config(["budget=0", "engine.lr=nan", "eval.window=0", "+budgt=4"]))
    assert len(problems) == 4


def test_a_missing_domain_is_named_not_dropped(tiny_overrides):
    with pytest.raises(UserError, match=r"data.domains names \['FreeLaw'\], which the corpus does not hold "
                                        r"\(it has \['Docs', 'Github', 'Licenses'\]\)"):
        build_documents(compose_config(tiny_overrides + ["data.domains=[Github,FreeLaw]"]).data)


def _write_zst(path: Path, rows: int, frames: int = 1) -> bytes:
    lines = [json.dumps({"text": f"document {i} " * 5, "meta": {"pile_set_name": "A"}}) + "\n" for i in range(rows)]
    per = -(-rows // frames)
    blob = b"".join(zstandard.ZstdCompressor().compress("".join(lines[i:i + per]).encode())
                    for i in range(0, rows, per))
    path.write_bytes(blob)
    return blob


def test_zst_corpora_read_whole_or_fail_naming_the_file(tmp_path):
    whole = tmp_path / "whole.jsonl.zst"
    blob = _write_zst(whole, 5000, frames=3)
    assert sum(1 for _ in read_pile_jsonl(whole)) == 5000  # every frame is read
    cut = tmp_path / "cut.jsonl.zst"
    cut.write_bytes(blob[:len(blob) // 2])
    with pytest.raises(UserError, match=f"data.path={cut} ends in the middle of a zstd frame"):
        list(read_pile_jsonl(cut))
    garbage = tmp_path / "garbage.jsonl.zst"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(UserError, match="is not a valid zstd file"):
        list(read_pile_jsonl(garbage))
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xb0\xff\x00" * 1000)
    with pytest.raises(UserError, match="line 1 is not UTF-8 text"):
        list(read_pile_jsonl(binary))


def test_changed_corpus_never_returns_old_records_and_a_damaged_cache_is_rebuilt(tmp_path, pile_fixture, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(pile_fixture.read_bytes())
    overrides = ["model=tiny", "data=jsonl", f"data.path={corpus}", "data.max_pool_per_domain=60",
                 "data.max_length=96", "data.max_doc_chars=1200", "data.query_fraction=0.2", "k=20", "budget=2",
                 "queries_per_domain=1", "eval.window=128", "selector=nn"]
    cfg = compose_config(overrides)
    first = run_job(cfg, tmp_path / "out")
    assert len(first) == 3 and first.data_key.nunique() == 1
    # a damaged cache file (same size, one byte changed) fails its checksum and is rebuilt, equal to before
    emb = sorted((Path(os.environ["HULLFT_CACHE"]) / "dataspace").glob("embeddings-*.npy"), key=os.path.getmtime)[-1]
    good = emb.read_bytes()
    emb.write_bytes(good[:-4] + bytes(4 - i for i in range(4)))
    capsys.readouterr()
    again = run_job(cfg, tmp_path / "out")  # resumes: nothing left to do, same data key
    assert f"is damaged ({emb.name}: checksum mismatch" in capsys.readouterr().err
    assert emb.read_bytes() == good and again.data_key.tolist() == first.data_key.tolist()
    # the corpus edited in place: the same command refuses the old directory, nothing is written to it
    text = corpus.read_text()
    corpus.write_text(text.replace("the", "teh"))
    before = {p: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    with pytest.raises(RecordsOfAnotherRun, match="measured on other data"):
        run_job(cfg, tmp_path / "out")
    assert {p: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    fresh = run_job(cfg, tmp_path / "new")
    assert fresh.data_key.iloc[0] != first.data_key.iloc[0]
    assert not np.allclose(fresh.bpb_base.sort_values().values, first.bpb_base.sort_values().values)


def test_writability_is_probed_and_os_errors_become_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(UserError, match=f"hydra.run.dir: cannot write in {blocker}"):
        check_writable(blocker / "run", "hydra.run.dir")
    check_writable(tmp_path / "not" / "yet" / "made", "hydra.run.dir")  # made later, under a writable folder
    for err, text in [(PermissionError(13, "Permission denied", "/x/records.parquet"), "/x/records.parquet: permission"),
                      (OSError(28, "No space left on device", "/x/run.log"), "/x/run.log: no space left"),
                      (OSError(30, "Read-only file system", "/x"), "/x: read-only file system")]:
        assert text in user_message(err)


def cli(args, cwd, module=None):
    cmd = [sys.executable, "-m", module, *args] if module else [sys.executable, str(REPO / "run.py"), *args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    return proc, errors


def test_cli_bad_inputs_end_in_one_line_and_leave_nothing(tmp_path, tiny_overrides):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    cases = [
        (["+budgt=4"], "+budgt: not a setting"),
        (["budgt=4"], "Key 'budgt' not in 'Config'"),
        (["model=model_schema"], "choose one of: gpt2, gpt2-large, smollm2-135m, tiny"),
        (["eval.window=-1"], "eval.window=-1"),
        ([f"hydra.run.dir={blocker}/run"], f"{blocker}"),
        (["logger=wandb", f"hydra.run.dir={tmp_path}/w"], "cannot write in"),  # wandb/ below it is a file
    ]
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "wandb").write_text("not a directory")
    for args, line in cases:
        proc, errors = cli([*tiny_overrides, *args], tmp_path)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, (args, proc.stderr[-2000:])
        assert len(errors) == 1 and line in errors[0], (args, errors)
    assert not (tmp_path / "outputs").exists()  # no job that failed its checks left a directory
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["wandb"]


def test_a_refused_run_leaves_the_directory_untouched(tmp_path, tiny_overrides):
    fixed = [f"hydra.run.dir={tmp_path}/fixed", "queries_per_domain=1", "selector=nn", "budget=2", "k=20"]
    proc, _ = cli([*tiny_overrides, *fixed], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before = {p.name: p.read_bytes() for p in (tmp_path / "fixed").iterdir()}
    assert {"records.jsonl", "records.parquet", "config.yaml", "overrides.yaml", "run.log"} <= set(before)
    proc, errors = cli([*tiny_overrides, *fixed, "engine.lr=1e-3"], tmp_path)
    assert proc.returncode == 1 and len(errors) == 1 and "holds records of another config" in errors[0]
    assert {p.name: p.read_bytes() for p in (tmp_path / "fixed").iterdir()} == before


def test_a_sweep_goes_on_past_a_failing_job_and_sums_up(tmp_path, tiny_overrides):
    proc, errors = cli(["-m", *tiny_overrides, "queries_per_domain=1", "selector=nn", "budget=0,2", "k=20",
                        "tag=mixed"], tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "1 of 2 jobs failed" in proc.stderr and "budget=0: must be a positive" in proc.stderr
    files = list((tmp_path / "multirun" / "mixed").rglob("records.parquet"))
    assert len(files) == 1 and (pd.read_parquet(files[0]).n == 2).all()


def test_report_on_bad_inputs_is_one_line(tmp_path):
    bad = tmp_path / "run" / "records.parquet"
    bad.parent.mkdir()
    bad.write_bytes(b"PAR1 this is not parquet")
    proc, errors = cli([str(tmp_path / "run")], tmp_path, module="hullft.report")
    assert proc.returncode == 1 and len(errors) == 1 and f"{bad} is not a readable records file" in errors[0]
    proc, errors = cli([str(tmp_path / "empty")], tmp_path, module="hullft.report")
    assert proc.returncode == 1 and len(errors) == 1 and "no records.parquet" in errors[0]
    good = tmp_path / "good" / "records.parquet"
    good.parent.mkdir()
    pd.DataFrame({"query_id": ["q"], "domain": ["d"], "selector": ["nn"], "n": [1], "bpb": [1.0], "bpb_base": [1.1],
                  "bpb_pct": [90.9], "t_total": [1.0], "t_select": [0.1], "config_hash": ["h"], "nll_nats": [1.0],
                  "nll_nats_base": [1.1], "query_bytes": [10], "query_bytes_base": [10]}).to_parquet(good)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    proc, errors = cli([str(good), "--out", f"{blocker}/report"], tmp_path, module="hullft.report")
    assert proc.returncode == 1 and len(errors) == 1 and str(blocker) in errors[0], proc.stderr[-2000:]
    proc, errors = cli(["build", "data=jsonl", f"data.path={tmp_path}", "model=tiny"], tmp_path, module="hullft.data")
    assert proc.returncode == 1 and errors == [f"error: data.path={tmp_path} is a folder with no .jsonl or "
                                               f".jsonl.zst file in it: point it at The Pile's files or at one of them"]
