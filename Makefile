# bpwatch commands. Each target installs what it needs into .venv on first use.
# The README's two commands: `make demo` and `make test`.
SHELL := /bin/bash
PY := .venv/bin/python
SERVICES := bash infra/local/services.sh

.PHONY: venv demo test test-unit test-integration services services-stop services-status setup train bench lint clean

venv:
	@bash infra/local/bootstrap.sh

demo: venv
	@bash infra/local/demo.sh

cluster-demo: venv services
	$(PY) -m infra.local.cluster_demo

test: venv
	@bash .ci/test.sh

test-unit: venv
	$(PY) -m pytest tests/unit tests/dataflow -q

test-integration: venv services
	$(PY) -m pytest tests/integration -q

services:
	@$(SERVICES) start

services-stop:
	@$(SERVICES) stop

services-status:
	@$(SERVICES) status

setup: venv services
	$(PY) -m lib.tools.admin setup

train: venv
	$(PY) -m models.train

bench: venv services
	$(PY) -m benchmarks.run

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf .venv .pytest_cache .ruff_cache .mypy_cache data run
