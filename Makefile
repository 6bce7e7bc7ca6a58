PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install system-deps run test lint typecheck bench clean

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

system-deps: ## Debian packages the tests drive: chromium (portal tests) and kcat (subscriber guide)
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v kcat >/dev/null || missing="$$missing kcat"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	fi

test: $(STAMP) system-deps ## the whole suite (starts the broker itself; needs PostgreSQL)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP) ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy events services tests benchmarks examples

bench: $(STAMP) ## throughput and latency figures against raw baselines
	$(PY) benchmarks/backbone.py

clean: ## remove local data (var/)
	rm -rf var
