PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install system-deps run test test-unit test-integration test-e2e fmt lint typecheck \
	bench clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-17s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## make the virtual environment

run: $(STAMP) ## the whole system on the embedded defaults, with demo data
	$(PY) -m services.cli run

system-deps: ## Debian packages: chromium (portal and back-office tests), kcat (subscriber guide), poppler-utils (PDF tests), pango (PDFs), wrk (read-api benchmark)
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v kcat >/dev/null || missing="$$missing kcat"; \
	command -v pdftotext >/dev/null || missing="$$missing poppler-utils"; \
	ldconfig -p | grep -q libpangoft2-1.0 || missing="$$missing libpango-1.0-0 libpangoft2-1.0-0"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	fi

test: $(STAMP) system-deps ## the whole suite (starts the broker itself; needs PostgreSQL)
	$(PY) -m pytest $(PYTEST_ARGS)

# PostgreSQL and the broker are pointed at a closed port for the unit tests: a test (or a
# child process of one) that still reaches for either fails instead of quietly using it.
UNREACHABLE := PGPORT=9 POSTGRES_PORT=9 KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9

test-unit: $(STAMP) ## the unit tests: no database, no broker, no browser
	$(UNREACHABLE) $(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: $(STAMP) system-deps ## the parts against PostgreSQL and a broker it starts
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

test-e2e: $(STAMP) system-deps ## the whole system in processes, and the portal and the back office in a browser
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

fmt: $(STAMP) ## apply ruff's automatic fixes (import order, modern syntax)
	$(VENV)/bin/ruff check --fix .

lint: $(STAMP) ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(MAKE) --no-print-directory typecheck

typecheck: $(STAMP) ## mypy, strict, on every package
	$(VENV)/bin/mypy events services tests benchmarks examples

bench: $(STAMP) ## throughput and latency figures against raw baselines
	$(PY) -m benchmarks $(BENCH_ARGS)

clean: ## remove local data (var/)
	rm -rf var
