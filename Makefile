# Two entry points, both self-installing on a fresh machine:
#   make demo   the main job end to end on the embedded defaults
#   make test   the whole test suite (what CI runs)
# An extra (same install): make demo-video   camera ingestion of a real video, then a search
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU torch pin (see constraints/cpu.txt); GPU users install their CUDA torch first.
CONSTRAINTS ?= constraints/cpu.txt
STAMP := $(VENV)/.installed

.PHONY: demo demo-video test lint format install clean

# scripts/install.sh is the same recipe the Dockerfiles run.
$(STAMP): pyproject.toml client/pyproject.toml $(CONSTRAINTS) constraints/lock.txt scripts/install.sh scripts/build_detector.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	PY=$(PY) EXTRAS=all,dev,milvus CONSTRAINTS=$(CONSTRAINTS) EDITABLE=1 DETECTOR=1 bash scripts/install.sh
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py $(DEMO_ARGS)

# vtest.avi (fetched like the tests do) -> python -m server -> python -m gallery ingest ->
# a search with a crop of a person; everything in runs/demo-video/ (scripts/demo_video.py).
demo-video: $(STAMP)
	$(PY) scripts/demo_video.py $(DEMO_ARGS)

test: $(STAMP) lint
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .hypothesis
