"""The data space built as a cluster builds it: corpus parts read in parallel, per-domain cutoffs instead of a
global sort, sharded stages through Hydra's launchers, a streamed merge, and a job that maps its files."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pytest

from hullft.compose import compose_config
from hullft.data import build as stages
from hullft.data import documents as docs_
from hullft.data import load_data_space
from hullft.data import sequences
from hullft.data.index import lists_path, parts_of, read_index
from tests.oracles import build_documents, build_index
from hullft.embedder import Embedder
from hullft.models import load_tokenizer
from test_data_space import reference_documents

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def corpus_dir(pile_fixture, tmp_path_factory) -> Path:
    """The fixture corpus in three files, with copies that only a look across files finds: texts of file 0
    again in file 2 (same domain) and in file 1 under another domain, and a copy inside file 1."""
    rows = [json.loads(line) for line in pile_fixture.read_text().splitlines()]
    folder = tmp_path_factory.mktemp("pile")
    files = [rows[0::3], rows[1::3], rows[2::3]]
    files[2] += files[0][:12]
    files[1] += [{"text": r["text"], "meta": {"pile_set_name": "Docs" if r["meta"]["pile_set_name"] != "Docs"
                                              else "Licenses"}} for r in files[0][12:30]]
    files[1] += files[1][:3]
    for i, part in enumerate(files):
        with open(folder / f"{i:02d}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in part)
    (folder / "README.txt").write_text("not a corpus file")
    return folder


@pytest.mark.parametrize("cap", [8, 10_000])
def test_parallel_documents_equal_one_stream(tiny_overrides, corpus_dir, cap):
    cfg = compose_config([*tiny_overrides, f"data.path={corpus_dir}", f"data.max_docs_per_domain={cap}",
                          "data.max_doc_chars=600", "data.query_fraction=0.3"]).data
    assert len(docs_.corpus_parts(cfg)) == 3
    one_stream = reference_documents(cfg)  # the whole corpus in one process, in memory
    pd.testing.assert_frame_equal(build_documents(cfg), one_stream)
    # the copies across files were there to drop, and a per-part cap alone would have kept some of them
    parts = docs_.corpus_parts(cfg)
    per_part = pd.concat([pd.DataFrame(list(docs_.read_pieces(part, cfg, docs_.chosen(docs_.scan(part, cfg), [], cfg))),
                                       columns=docs_.KEPT_COLUMNS) for part in parts])
    assert per_part.text.duplicated().any()


def test_parallel_documents_from_files_equal_one_stream(tiny_overrides, corpus_dir, isolated_cache):
    cfg = compose_config([*tiny_overrides, f"data.path={corpus_dir}", "data.max_docs_per_domain=8",
                          "data.max_doc_chars=600", "data.query_fraction=0.3", "data.num_shards=2"]).data
    keys = stages.Keys.of(cfg, "tok", "emb")
    parts = docs_.corpus_parts(cfg)
    for shard in (1, 0):  # shard 1 keeps part 1 before part 0 is scanned by shard 0: it scans it itself
        cfg.shard = shard
        for p in stages.mine(len(parts), cfg):
            stages.kept_path(cfg, keys, p, parts)
    pd.testing.assert_frame_equal(stages.documents(cfg, keys), reference_documents(cfg))


def test_cutoffs_equal_a_global_sort(monkeypatch):
    monkeypatch.setattr(sequences, "ORDER_BUCKETS", 8)  # many sequences share a bucket; some share an order
    rng = np.random.default_rng(0)
    n = 3000
    seqs = pd.DataFrame({"domain": rng.choice(["a", "b", "c"], size=n, p=[0.6, 0.35, 0.05]),
                         "doc_id": [f"doc{i}" for i in rng.integers(0, 400, size=n)],
                         "start": rng.integers(0, 5, size=n) * 96,
                         "order": rng.integers(0, 200, size=n) / 200}).drop_duplicates(["doc_id", "start"])
    shuffled = seqs.sample(frac=1, random_state=1)
    units = [shuffled.iloc[i::7] for i in range(7)]
    cap = 300
    cuts = sequences.cutoffs(lambda columns: (u[columns] for u in units), cap)
    assert cuts["c"] is None  # fewer than the cap: all kept
    kept = pd.concat([u[sequences.kept(u, cuts)] for u in units])
    brute = seqs.sort_values(["order", "doc_id", "start"]).groupby("domain").head(cap)
    assert set(zip(kept.doc_id, kept.start)) == set(zip(brute.doc_id, brute.start))
    assert kept.groupby("domain").size().to_dict() == {"a": cap, "b": cap, "c": (seqs.domain == "c").sum()}


def _cli(args, cache: Path):
    env = {**os.environ, "HULLFT_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "hullft.data", *args], capture_output=True, text=True, env=env,
                          cwd=cache.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


SPACE_FILES = ("documents-*.parquet", "queries-*.parquet", "pool-*.parquet", "pooltable-*.npy", "tokens-*.bin",
               "embeddings-*.npy", "index-*.faiss", "index-*.ivfdata")


@pytest.fixture(scope="module")
def one_process_build(tiny_overrides, corpus_dir, tmp_path_factory):
    overrides = [*tiny_overrides, f"data.path={corpus_dir}", "data.unit_docs=12", "data.index=ivf",
                 "data.ivf_nlist=4", "data.max_docs_per_domain=40"]
    cache = tmp_path_factory.mktemp("one") / "cache"
    _cli(["build", *overrides], cache)
    return overrides, cache / "dataspace"


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_sharded_build_through_a_launcher_is_the_one_process_build(one_process_build, tmp_path, launcher):
    overrides, one = one_process_build
    out = _cli(["build", *overrides, "data.num_shards=2", f"hydra/launcher={launcher}"], tmp_path / "cache").stdout
    assert "stage embed: embed -m" in out and "stage merge" in out
    sharded = tmp_path / "cache" / "dataspace"
    assert len(list(one.glob("unit-*.parquet"))) >= 4 and len(list(one.glob("scan-*.npy"))) == 3
    for pattern in SPACE_FILES:
        (a,), (b,) = sorted(one.glob(pattern)), sorted(sharded.glob(pattern))
        assert a.name == b.name and a.read_bytes() == b.read_bytes(), pattern
    if launcher == "submitit_local":  # real submitit jobs: each left its log
        assert list((tmp_path / "cache" / "jobs").rglob("*_log.out"))


def test_a_sharded_stage_refuses_to_run_outside_its_order(one_process_build, tmp_path):
    overrides, _ = one_process_build
    env = {**os.environ, "HULLFT_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "hullft.data", "merge", *overrides], capture_output=True,
                          text=True, env=env, cwd=tmp_path)
    assert proc.returncode != 0 and "are not embedded: run `python -m hullft.data embed" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_job_over_mapped_files_returns_what_in_memory_ones_do(one_process_build, monkeypatch):
    overrides, one = one_process_build
    monkeypatch.setenv("HULLFT_CACHE", str(one.parent))
    cfg = compose_config(overrides)
    tokenizer, fingerprint = load_tokenizer(cfg.model)
    space = load_data_space(cfg.data, tokenizer, fingerprint, Embedder(cfg.embedder))
    assert isinstance(space.pool.offsets, np.memmap) and not hasattr(space.pool, "flat")  # tokens: positioned reads
    on_disk = space.search.index
    assert lists_path(one / f"index-{space.keys.index}.faiss").exists()
    assert isinstance(faiss.downcast_InvertedLists(faiss.extract_index_ivf(on_disk).invlists),
                      faiss.OnDiskInvertedLists)
    in_memory = build_index(np.asarray(space.embeddings), cfg.data)  # the same index, lists in RAM
    in_memory.nprobe = on_disk.nprobe
    queries = space.candidates(np.arange(0, len(space.pool), 17))
    for a, b in zip(on_disk.search(queries, 10), in_memory.search(queries, 10)):
        np.testing.assert_array_equal(a, b)
    # the mapped pool table and tokens equal the units' tables, concatenated in memory
    units = pd.concat([pd.read_parquet(stages.unit_paths(space.keys, u)[0])
                       for u in range(json.loads(stages.manifest_path(space.keys).read_text())["units"])])
    assert len(units) == len(space.pool)
    rows = np.arange(0, len(units), 7)
    assert [space.pool.tokens(int(r)) for r in rows] == [list(units.tokens.iloc[r]) for r in rows]
    assert list(space.pool.domains(rows)) == list(units.domain.iloc[rows])
    keys = space.pool_keys(rows)
    assert list(keys.doc_id) == list(units.doc_id.iloc[rows]) and list(keys.start) == list(units.start.iloc[rows])


def test_lists_on_disk_are_checked_like_every_file(one_process_build, tmp_path):
    overrides, one = one_process_build
    index = next(one.glob("index-*.faiss"))
    copy = tmp_path / index.name
    copy.write_bytes(index.read_bytes())
    lists = lists_path(copy)
    lists.write_bytes(lists_path(index).read_bytes()[:-8] + b"damaged!")
    (tmp_path / (lists.name + ".sha256")).write_text((one / (lists_path(index).name + ".sha256")).read_text())
    with pytest.raises(ValueError, match="checksum mismatch"):
        read_index(copy)


def test_a_new_build_version_never_takes_an_old_space(tiny_overrides, monkeypatch):
    cfg = compose_config(tiny_overrides).data
    now = stages.Keys.of(cfg, "tok", "emb")
    monkeypatch.setattr(stages, "BUILD_VERSION", stages.BUILD_VERSION - 1)
    before = stages.Keys.of(cfg, "tok", "emb")
    assert all(a != b for a, b in zip(vars(now).values(), vars(before).values()))
    assert stages.manifest_path(now) != stages.manifest_path(before)


def test_units_are_the_pool_documents_in_order(tiny_overrides, isolated_cache):
    cfg = compose_config([*tiny_overrides, "data.unit_docs=7"]).data
    keys = stages.Keys.of(cfg, "tok", "emb")
    docs = stages.documents(cfg, keys)
    pool = docs[docs.split == "pool"].reset_index(drop=True)
    units = [stages.unit_documents(cfg, keys, u) for u in range(stages.unit_count(cfg, keys))]
    assert len(units) == -(-len(pool) // 7) and all(len(u) == 7 for u in units[:-1])
    pd.testing.assert_frame_equal(pd.concat(units, ignore_index=True), pool)


def test_a_file_written_is_not_hashed_again_when_read_but_a_change_still_fails(isolated_cache, tmp_path, monkeypatch):
    from hullft import cache
    from hullft.data import files

    path = tmp_path / "table.npy"
    value, digest = files.cached(path, lambda: np.arange(1000), files.save_npy, np.load)

    def no_hashing(p):
        raise AssertionError(f"{p} hashed again")
    with monkeypatch.context() as patched:
        patched.setattr(cache, "file_digest", no_hashing)
        again, same = files.cached(path, lambda: np.zeros(3), files.save_npy, np.load)  # the stage that reads it
    assert same == digest and np.array_equal(again, value)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1))  # a later write, whatever the clock
    with pytest.raises(ValueError, match="checksum mismatch"):
        cache.verified_digest(path)


def test_an_index_in_parts_returns_what_one_index_does(one_process_build, tmp_path, monkeypatch):
    overrides, one = one_process_build
    shutil.copytree(one, tmp_path / "cache" / "dataspace")  # rows and embeddings as built: only the index is new
    rows = json.loads(next(one.glob("space-*.json")).read_text())["rows"]
    parted = [*overrides, f"data.index_part_rows={rows // 3 + 1}"]
    _cli(["merge", *parted], tmp_path / "cache")
    files = sorted((tmp_path / "cache" / "dataspace").glob("index-*of3.faiss"))
    assert len(files) == 3 and all(lists_path(f).exists() for f in files)

    def space(cache, extra):
        monkeypatch.setenv("HULLFT_CACHE", str(cache))
        cfg = compose_config([*extra, "data.ivf_nprobe=2"])  # 2 of 4 lists: which lists are probed matters
        tokenizer, fingerprint = load_tokenizer(cfg.model)
        return load_data_space(cfg.data, tokenizer, fingerprint, Embedder(cfg.embedder))
    whole, parts = space(one.parent, overrides), space(tmp_path / "cache", parted)
    assert [p.ntotal for p in parts_of(parts.search.index)] == [rows // 3 + 1] * 2 + [rows - 2 * (rows // 3 + 1)]
    queries = whole.candidates(np.arange(0, rows, 5))
    for q in queries:
        a, b = whole.search(q, 10), parts.search(q, 10)
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_allclose(a[0], b[0], rtol=1e-6)
