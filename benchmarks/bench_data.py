"""The data space at scale: per build stage, its wall and CPU seconds, disk read and written and its process's
peak memory, at 1M / 3M sequences; a job's memory over the result, and the search's time per query and
recall@200 against exact search.

    python -m benchmarks.bench_data [--sizes 1000000 3000000] [--files 4] [--index IVF1024,PQ64x4fs] [--nprobe 32]
                                    [--rerank 1000] [--index-part-rows 0] [--queries 200] [--job-only]
                                    [--workdir .cache/bench-data]

Everything but the corpus and the embedder is the harness's own build (hullft/data/build.py), each stage in a
process of its own as a cluster job would run it (scan, keep, documents, chunk, plan, embed, merge), and a
job's loading of the result. The corpus is synthetic Pile-format text from a fixed seed, in --files files: 20 domains of topical documents
written in words that are single tokens of the model's tokenizer, each document exactly four 256-token
sequences. The embedder is synthetic too, because all-MiniLM-L6-v2 would take ~14 h for 1M sequences on
2 cores: a seeded random projection of each text's bag of words to 384 dimensions, which clusters by topic as
sentence embeddings do. Each build and each job runs in a fresh process, so its peak RSS is its own.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from hullft.cache import REPO_ROOT

DOMAINS, TOPICS_PER_DOMAIN, TOPIC_WORDS = 20, 50, 300
WORDS_PER_DOC, SEQ_TOKENS, DIM = 1024, 256, 384


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> tuple:
    """(resident, of which file-backed: memory-mapped pages the OS can drop and read again), MiB."""
    with open("/proc/self/statm") as f:
        resident, shared = (int(v) * os.sysconf("SC_PAGE_SIZE") / 2**20 for v in f.read().split()[1:3])
    return resident, shared


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def disk_mib() -> tuple:
    """(read, written) by this process from and to the disk itself, MiB: a read served by the page cache counts
    nothing, so a stage whose input no longer fits in memory shows it here."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["read_bytes"]) / 2**20, int(fields["write_bytes"]) / 2**20


def single_token_words(tokenizer) -> list:
    """Words w such that ' w' is one token: documents of n words are exactly n tokens."""
    words = sorted(t[1:] for t in tokenizer.get_vocab() if t.startswith("Ġ") and t[1:].isascii()
                   and t[1:].isalpha() and t[1:].islower() and 3 <= len(t) - 1 <= 6)
    return [w for w in words if len(tokenizer(" " + w, add_special_tokens=False).input_ids) == 1]


class SyntheticEmbedder:
    """A seeded random projection of a text's word counts, L2-normalised (the Embedder's interface)."""

    def __init__(self, words: list):
        self.index = {w: i for i, w in enumerate(words)}
        self.projection = np.random.default_rng(7).normal(size=(len(words), DIM)).astype(np.float32)
        self.dim, self.fingerprint = DIM, f"synthetic-bow-{len(words)}"

    def embed(self, texts, progress: bool = False) -> np.ndarray:
        from scipy.sparse import csr_matrix

        ids = [[self.index.get(w, 0) for w in t.split()] for t in texts]
        indptr = np.cumsum([0] + [len(i) for i in ids])
        counts = csr_matrix((np.ones(indptr[-1], np.float32), np.concatenate(ids or [[]]).astype(np.int64), indptr),
                            shape=(len(texts), len(self.index)))
        vectors = np.asarray(counts @ self.projection, dtype=np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def write_corpus(folder: Path, sequences: int, words: list, files: int) -> None:
    """Enough documents that each domain's pool holds sequences / DOMAINS sequences after the 10% held out,
    dealt round-robin into `files` files (each holds every domain, as The Pile's do)."""
    rng = np.random.default_rng(0)
    vocab = np.array(words)
    docs_per_domain = int(np.ceil(sequences / DOMAINS / (WORDS_PER_DOC // SEQ_TOKENS) / 0.85)) + 10
    background = 1 / np.arange(1, len(words) + 1)
    background /= background.sum()
    tmp = folder.with_suffix(".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    outs = [open(tmp / f"{i:02d}.jsonl", "w") for i in range(files)]
    written = 0
    for d in range(DOMAINS):
        topics = [rng.choice(len(words), size=TOPIC_WORDS, replace=False) for _ in range(TOPICS_PER_DOMAIN)]
        weights = 1 / np.arange(1, TOPIC_WORDS + 1)
        weights /= weights.sum()
        for _ in range(docs_per_domain):
            topic = topics[rng.integers(TOPICS_PER_DOMAIN)]
            own = topic[rng.choice(TOPIC_WORDS, size=WORDS_PER_DOC, p=weights)]
            shared = rng.choice(len(words), size=WORDS_PER_DOC, p=background)
            ids = np.where(rng.random(WORDS_PER_DOC) < 0.6, own, shared)
            outs[written % files].write(json.dumps({"text": " " + " ".join(vocab[ids]),
                                                    "meta": {"pile_set_name": f"Domain{d:02d}"}}) + "\n")
            written += 1
    for f in outs:
        f.close()
    tmp.rename(folder)


def data_overrides(args, corpus: Path, sequences: int) -> list:
    return ["data=jsonl", f"data.path={corpus}", f"data.max_length={SEQ_TOKENS}", "data.max_doc_chars=8000",
            f"data.max_pool_per_domain={sequences // DOMAINS}", "data.max_docs_per_domain=10000000",
            "data.max_docs_per_source=1", "data.embedding_dtype=fp16", f"data.index='{args.index}'",
            f"data.ivf_nprobe={args.nprobe}", f"data.index_rerank={args.rerank}",
            f"data.index_part_rows={args.index_part_rows}", f"k={args.k}"]


def child_stage(args, corpus: Path, sequences: int) -> dict:
    """One build stage in this process: its seconds, and this process's RSS before it and at its peak."""
    from hullft.compose import compose_config
    from hullft.data import build, stages
    from hullft.models import load_tokenizer

    cfg = compose_config(data_overrides(args, corpus, sequences))
    tokenizer, fingerprint = load_tokenizer(cfg.model)
    embedder = SyntheticEmbedder(single_token_words(tokenizer))
    keys = build.Keys.of(cfg.data, fingerprint, embedder.fingerprint)
    before, start, cpu, disk = rss_mib()[0], time.perf_counter(), cpu_s(), disk_mib()
    line = stages.run_stage(args.stage, cfg.data, keys, tokenizer, embedder)
    read, written = (after - first for after, first in zip(disk_mib(), disk))
    return {"s": time.perf_counter() - start, "cpu_s": cpu_s() - cpu, "disk_read_mib": read,
            "disk_written_mib": written, "rss_before_mib": before, "peak_rss_mib": peak_rss_mib(), "said": line[:120]}


def child_job(args, corpus: Path, sequences: int) -> dict:
    """What a job does with the data space: load it, then per query embed, search, read candidate rows and the
    tokens it would train on. RSS is measured before loading and after the queries."""
    from hullft.compose import compose_config
    from hullft.data import load_data_space
    from hullft.models import load_tokenizer
    from hullft.per_query import embed_query

    cfg = compose_config(data_overrides(args, corpus, sequences))
    tokenizer, fingerprint = load_tokenizer(cfg.model)
    embedder = SyntheticEmbedder(single_token_words(tokenizer))
    before = rss_mib()
    space = load_data_space(cfg.data, tokenizer, fingerprint, embedder)
    queries = space.with_text(space.queries.sample(min(args.queries, len(space.queries)), random_state=0))
    q = np.stack([embed_query(t, tokenizer, embedder, cfg.data.max_length) for t in queries.text])
    space.search(q[0], cfg.k)  # warm-up
    times, found = [], []
    for vector in q:
        start = time.perf_counter()
        _, rows = space.search(vector, cfg.k)
        times.append(time.perf_counter() - start)
        found.append(rows)
        space.candidates(rows)
        for r in rows[:20]:
            space.pool.tokens(int(r))
    after = rss_mib()
    held, held_file = after[0] - before[0], after[1] - before[1]
    exact = np.full((len(q), cfg.k), -1, dtype=np.int64)
    scores = np.full((len(q), cfg.k), -np.inf, dtype=np.float32)
    emb = space.embeddings
    for start in range(0, len(emb), 1 << 16):
        block = np.asarray(emb[start:start + (1 << 16)], np.float32) @ q.T
        both = np.concatenate([scores, block.T], axis=1)
        rows = np.concatenate([exact, np.broadcast_to(np.arange(start, start + len(block)), (len(q), len(block)))],
                              axis=1)
        top = np.argsort(-both, axis=1, kind="stable")[:, :cfg.k]
        scores, exact = np.take_along_axis(both, top, 1), np.take_along_axis(rows, top, 1)
    recall = np.mean([len(set(a.tolist()) & set(b.tolist())) / cfg.k for a, b in zip(found, exact)])
    return {"job_rss_mib": held, "job_rss_file_mib": held_file, "search_ms": 1000 * float(np.median(times)),
            "search_ms_p90": 1000 * float(np.quantile(times, 0.9)), f"recall@{cfg.k}": float(recall),
            "queries": len(q), "disk_mib": sum(p.stat().st_size for p in Path(os.environ["HULLFT_CACHE"]).rglob("*")
                                               if p.is_file() and p.name.startswith(("tokens-", "pool-", "embeddings-",
                                                                                     "index-", "queries-", "pooltable-"))) / 2**20}


def run_child(phase: str, args, corpus: Path, sequences: int, stage: str = "") -> dict:
    cache = args.workdir / f"space-{sequences}"
    models = cache / "models"  # the dequantized model is made once, in the default cache, not in every space's
    if not models.exists():
        cache.mkdir(parents=True, exist_ok=True)
        models.symlink_to(REPO_ROOT / ".cache" / "models", target_is_directory=True)
    env = {**os.environ, "HULLFT_CACHE": str(cache)}
    argv = [sys.executable, "-m", "benchmarks.bench_data", "--child", phase, "--corpus", str(corpus),
            "--sequences", str(sequences), "--index", args.index, "--nprobe", str(args.nprobe), "--rerank",
            str(args.rerank), "--index-part-rows", str(args.index_part_rows), "--queries", str(args.queries),
            "--k", str(args.k), "--stage", stage]
    out = subprocess.run(argv, env=env, cwd=REPO_ROOT, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{phase} at {sequences} sequences failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000])
    ap.add_argument("--files", type=int, default=4, help="corpus files (parts read in parallel)")
    ap.add_argument("--index", default="IVF1024,PQ64x4fs")
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--rerank", type=int, default=1000)
    ap.add_argument("--index-part-rows", type=int, default=0, help="rows an index file holds (0: one file)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument("--job-only", action="store_true", help="spaces already built: measure the job alone")
    ap.add_argument("--workdir", type=Path, default=REPO_ROOT / ".cache" / "bench-data")
    ap.add_argument("--child", choices=["stage", "job"], help=argparse.SUPPRESS)
    ap.add_argument("--stage", default="", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--sequences", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        result = (child_stage if args.child == "stage" else child_job)(args, args.corpus, args.sequences)
        print(json.dumps(result))
        return
    import pandas as pd

    from hullft.compose import compose_config
    from hullft.models import load_tokenizer

    args.workdir.mkdir(parents=True, exist_ok=True)
    words = single_token_words(load_tokenizer(compose_config([]).model)[0])
    rows = []
    from hullft.data.stages import STAGES

    stages = []
    for n in args.sizes:
        corpus = args.workdir / f"corpus-{n}-{args.files}"
        if not corpus.exists():
            write_corpus(corpus, n, words, args.files)
        row = {"sequences": n}
        for stage in [] if args.job_only else STAGES:
            result = run_child("stage", args, corpus, n, stage)
            stages.append({"sequences": n, "stage": stage, **result})
            print(json.dumps(stages[-1]), flush=True)
            row[f"{stage}_s"], row[f"{stage}_peak_mib"] = result["s"], result["peak_rss_mib"]
            row[f"{stage}_cpu_s"] = result["cpu_s"]
        if not args.job_only:
            row["build_s"] = sum(row[f"{stage}_s"] for stage in STAGES)
            row["build_cpu_s"] = sum(row[f"{stage}_cpu_s"] for stage in STAGES)
            row["build_peak_rss_mib"] = max(row[f"{stage}_peak_mib"] for stage in STAGES)
        row.update(run_child("job", args, corpus, n))
        rows.append(row)
        print(json.dumps(row), flush=True)
    df = pd.DataFrame(rows)
    if "build_s" in df:
        df["build_s_per_100k"] = df.build_s / df.sequences * 1e5
        df["build_cpu_s_per_100k"] = df.build_cpu_s / df.sequences * 1e5
        per_stage = pd.DataFrame(stages).drop(columns="said")
        for column in ("s", "cpu_s"):  # linear in the rows if these agree across sizes
            per_stage[f"{column}_per_100k"] = per_stage[column] / per_stage.sequences * 1e5
        print(per_stage.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    print(f"{len(words)} single-token words; index {args.index}, nprobe {args.nprobe}, rerank {args.rerank}, "
          f"k {args.k}, {os.cpu_count()} cores")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.2f}"))


if __name__ == "__main__":
    main()
