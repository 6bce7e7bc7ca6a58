PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test lint typecheck bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## make the virtual environment

run: $(STAMP) ## the whole system on the embedded defaults, with demo data
	$(PY) -m services.cli run

test: $(STAMP) ## the whole suite (starts the broker itself; needs PostgreSQL)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP) ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy events services tests benchmarks examples

bench: $(STAMP) ## throughput and latency figures against raw baselines
	$(PY) benchmarks/backbone.py

clean: ## remove local data (var/)
	rm -rf var
