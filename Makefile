# Quick start: `make train`, then `make test`. Every target installs into .venv first if needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH  := torch==2.13.0
ARGS   ?=

export WANDB_SILENT ?= true
export NO_MKDOCS_2_WARNING ?= 1

.PHONY: install train eval test test-slow lint format benchmark benchmark-train benchmark-data soak docs docs-build docs-reference docs-benchmarks clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned, so pip never chooses a (multi-GB CUDA) build by itself
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

train: $(STAMP)  ## train the embedded default (digits); pass overrides with ARGS="..."
	$(PY) -m project.train $(ARGS)

eval: $(STAMP)   ## make eval ARGS="ckpt_path=PATH"
	$(PY) -m project.eval $(ARGS)

test: $(STAMP)   ## the default suite (no slow, no gpu)
	WANDB_MODE=offline $(PY) -m pytest $(ARGS)

test-slow: $(STAMP)
	WANDB_MODE=offline $(PY) -m pytest -m slow $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check src tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format src tests benchmarks

benchmark: $(STAMP)  ## inference engines vs eager on the newest run's best checkpoint
	$(PY) benchmarks/inference_speed.py $(ARGS)

benchmark-train: $(STAMP)  ## plain fp32 loop vs the project's Trainer path vs the data path
	$(PY) benchmarks/train_speed.py $(ARGS)

benchmark-data: $(STAMP)  ## preparing a folder of JPEG photos vs a plain Pillow loop; feed rate vs training
	$(PY) benchmarks/data_speed.py $(ARGS)

soak: $(STAMP)  ## bounded serving soak (10,000 requests, 16 clients, 10 % malformed) on the newest bundle
	$(PY) benchmarks/serve_load.py --soak --requests 10000 --clients 16 $(ARGS)

docs: $(STAMP)  ## serve the documentation site on 127.0.0.1:8001 (8000 is project.serve's), rebuilt on every change
	$(VENV)/bin/mkdocs serve -a 127.0.0.1:8001

docs-build: $(STAMP)  ## build the site into site/, strictly: a broken link or a missing page fails
	$(VENV)/bin/mkdocs build --strict

docs-reference: $(STAMP)  ## regenerate docs/reference/config.md from the comments in conf/
	$(PY) -m project.docs_reference

docs-benchmarks: $(STAMP)  ## re-run every command recorded under docs/data/, then render docs/benchmarks.md
	$(PY) -m project.docs_benchmarks --refresh

clean:
	rm -rf logs multirun outputs site .pytest_cache .ruff_cache
