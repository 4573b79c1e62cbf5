# One command to set up and run the demo, one to set up and run the tests.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export PERSONALIZE_DATASET ?= $(CURDIR)/.data/demo
export PERSONALIZE_ARTIFACTS ?= $(CURDIR)/.data/artifacts
export PERSONALIZE_OUTPUT ?= $(CURDIR)/.data/output
export DAGSTER_DISABLE_TELEMETRY := 1

.PHONY: setup demo lint test ui bench clean cluster-demo

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip==26.3"
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

demo: setup
	$(VENV)/bin/personalize-pipeline demo-data --out $(PERSONALIZE_DATASET)
	$(PY) -m assets.run_demo

# ruff (lint + format) on the tree, mypy on the engine and the code location ([tool.mypy] in pyproject.toml)
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: setup lint
	$(PY) -m pytest -q

# while working: everything but the slow, S3 and Dagster tests (markers in pyproject.toml)
.PHONY: test-fast
test-fast: setup
	$(PY) -m pytest -q -m "not slow and not s3 and not dagster"

# Redis + PostgreSQL + SeaweedFS + two Celery workers on this machine: deploy/README.md
cluster-demo: setup
	$(PY) tools/cluster_demo.py

ui: setup
	$(VENV)/bin/dagster dev -w workspace.yaml

bench: setup
	$(PY) bench/run.py

clean:
	rm -rf .data .dagster_home
