# One command per job on a fresh clone: `make test`, `make train`, `make bench`, `make notebooks`
# (`make notebooks-full` refreshes the committed full-size outputs).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: requirements.txt requirements-deploy.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

.PHONY: setup test lint train bench notebooks notebooks-full
setup: $(VENV)/.installed

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: lint
	$(PY) -m pytest

train: setup
	$(PY) train.py

bench: setup
	$(PY) -m pytest bench
	$(PY) -m bench.report bench/output/latest.json

notebooks: setup  # small runs into runs/notebooks/: the committed notebooks are not touched
	$(PY) -m notebooks.run

notebooks-full: setup  # re-execute full size and replace the committed outputs (about 30 min on 2 cores)
	NOTEBOOKS_FULL=1 $(PY) -m notebooks.run --in-place
