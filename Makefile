# Candor developer tasks. Needs GNU make, git and python3.11; everything else goes into $(VENV).
# Environment variables (CANDOR_DATA_DIR, CANDOR_BIND, CANDOR_TEST_POSTGRES_URL, ...) pass through unchanged.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Written after a successful install; re-install only when the dependency files change.
STAMP := $(VENV)/.installed
# torch must be installed first and exactly pinned: a plain or ranged torch pulls the huge CUDA build.
TORCH_VERSION := 2.13.0
# bertviz's views (served by /v1/explanations/{id}/bertviz) need only its files: its declared dependencies pull an
# ancient boto3 (every current botocore caps python-dateutil below the 4.x pandas brings) for its unused neuron view.
BERTVIZ := bertviz==1.4.1
# dice-ml requires the full xgboost wheel and with it ~700 MB of CUDA libraries; its other requirements are in
# pyproject.toml, with xgboost-cpu (the same `xgboost` module, 6 MB).
DICE := dice-ml==0.12
# MLServer 1.7.1 with its scikit-learn runtime, the real V2 predictor the remote-model tests and bench start: its
# pins clash with Candor's, so it has its own environment (tests/mlserver_env.sh, tests/mlserver-constraints.txt).
MLSERVER_VENV ?= .venv-mlserver
MLSERVER_STAMP := $(MLSERVER_VENV)/.installed
PIP_FLAGS ?= --disable-pip-version-check --progress-bar off
PYTEST_ARGS ?=

.PHONY: help venv install mlserver run test lint fmt typecheck dockerlint pytest bench openapi clean distclean

help:
	@echo "make run        install, build the demo models, ensure a demo key, serve on 127.0.0.1:8000"
	@echo "make test       lint (below) then pytest; extra pytest args: PYTEST_ARGS=..."
	@echo "make lint       ruff check, ruff format --check, mypy, import contracts (lint-imports), hadolint"
	@echo "make fmt        ruff format + ruff check --fix"
	@echo "make bench      run the benchmarks in bench/ (SHAP, counterfactuals, text, batch jobs, XGBoost)"
	@echo "make openapi    write openapi.yaml"
	@echo "make venv       create $(VENV) and install the project with its dev extras"
	@echo "make mlserver   create $(MLSERVER_VENV): MLServer for the remote-model tests and bench"
	@echo "make clean      remove caches and build artifacts (distclean also removes $(VENV))"

venv install: $(STAMP)

# Order-only on $(PY): its mtime is the interpreter's (a symlink), which must not force re-installs.
$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PIP) install $(PIP_FLAGS) --upgrade pip
	$(PIP) install $(PIP_FLAGS) -c constraints.txt torch==$(TORCH_VERSION)
	$(PIP) install $(PIP_FLAGS) -c constraints.txt -e '.[dev]'
	$(PIP) install $(PIP_FLAGS) -c constraints.txt --no-deps $(BERTVIZ) $(DICE)
	# The offline verifier's wheels, for tests/test_offline_verify.py's clean-venv install (no network there).
	$(PIP) download $(PIP_FLAGS) --only-binary=:all: -d .cache/wheels cryptography==51.0.1 cffi==2.1.1 pycparser==3.12
	touch $@

$(MLSERVER_STAMP): tests/mlserver_env.sh tests/mlserver-constraints.txt
	PYTHON=$(PYTHON) MLSERVER_VENV=$(MLSERVER_VENV) bash tests/mlserver_env.sh

mlserver: $(MLSERVER_STAMP)

# One job runner beside gunicorn; it is stopped (and gives its job back to the queue) when gunicorn stops.
run: $(STAMP)
	$(VENV)/bin/candor demo install
	$(VENV)/bin/candor keys ensure-demo
	$(VENV)/bin/candor jobs run & runner=$$!; \
	trap 'kill -TERM $$runner 2>/dev/null || true; wait $$runner || true' EXIT; \
	$(VENV)/bin/candor serve

# Static checks, shared by `make lint` and `make test`.
define LINT_RECIPE
$(VENV)/bin/ruff check .
$(VENV)/bin/ruff format --check .
$(VENV)/bin/mypy
$(VENV)/bin/lint-imports --no-cache --no-logo
$(VENV)/bin/hadolint Dockerfile
endef

define PYTEST_RECIPE
CANDOR_TEST_MLSERVER_VENV=$(MLSERVER_VENV) $(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)
endef

test: $(STAMP) $(MLSERVER_STAMP)
	$(LINT_RECIPE)
	$(PYTEST_RECIPE)

lint: $(STAMP)
	$(LINT_RECIPE)

pytest: $(STAMP) $(MLSERVER_STAMP)
	$(PYTEST_RECIPE)

fmt: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

dockerlint: $(STAMP)
	$(VENV)/bin/hadolint Dockerfile

bench: $(STAMP) $(MLSERVER_STAMP)
	$(PY) bench/bench_shap.py
	$(PY) bench/bench_counterfactuals.py
	$(PY) bench/bench_text.py
	$(PY) bench/bench_jobs.py
	$(PY) bench/bench_cluster.py
	$(PY) bench/bench_load.py
	$(PY) bench/bench_rejections.py
	$(PY) bench/bench_trees.py
	$(PY) bench/bench_onnx.py
	CANDOR_TEST_MLSERVER_VENV=$(MLSERVER_VENV) $(PY) bench/bench_remote.py
	$(PY) bench/bench_fairness.py

openapi: $(STAMP)
	$(VENV)/bin/candor openapi > openapi.yaml.tmp
	mv openapi.yaml.tmp openapi.yaml

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis test-artifacts bench/results openapi.yaml.tmp \
		.import_linter_cache .grimp_cache
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d -print0 | xargs -0r rm -rf

distclean: clean
	rm -rf $(VENV) $(MLSERVER_VENV)
