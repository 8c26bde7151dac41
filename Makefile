# eraflow — `make demo` and `make test` work on a fresh clone with Python 3.11 and pip.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   := demo

.PHONY: demo test bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/eraflow synth $(DEMO)/data --eras 120 --rows-per-era 400 --features 300 --seed 0
	$(BIN)/eraflow ingest $(DEMO)/data/train.parquet $(DEMO)/data/validation.parquet $(DEMO)/store \
		--features-json $(DEMO)/data/features.json --feature-set all --targets 'target*'
	$(BIN)/eraflow info $(DEMO)/store

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python benches/ingest_memory.py

clean:
	rm -rf $(DEMO) .pytest_cache .benchmarks
