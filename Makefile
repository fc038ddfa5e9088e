# Decode Arena — everything starts here. `make demo` and `make test` work on a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export ARENA_HOME ?= $(CURDIR)/.arena
export DAGSTER_HOME ?= $(ARENA_HOME)/dagster

.PHONY: setup venv engine images images-gpu models browser up down status demo fleet-demo worker test test-fast clean

setup: venv engine images models ## venv, Docker engine with gVisor, official base images, pinned models (idempotent)

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

engine:
	@bash scripts/setup-engine.sh
	@bash scripts/setup-cpus.sh

images: engine
	@bash scripts/build-images.sh

images-gpu: engine ## arena/torch-cuda:1 for GPU submissions (~2.7 GB from PyPI; not part of setup or demo)
	@bash scripts/build-images.sh torch-cuda

models: venv ## pinned model files of the challenges (sha256-checked) into $$ARENA_HOME/models
	@$(PY) -m challenges.models.fetch

browser: ## Debian's chromium, driven by Playwright in the web tests
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null); } \
	  || { echo "install Debian's chromium (apt-get install chromium) for the browser tests"; exit 1; }

up: setup ## start the platform in the background; returns once every service answers
	@$(PY) scripts/services.py up

down: ## stop the platform
	@$(PY) scripts/services.py down

status:
	@$(PY) scripts/services.py status

demo: up ## submit the examples, wait for their scores, print the leaderboard and the URLs
	@$(PY) scripts/demo.py

fleet-demo: setup ## the platform as a fleet on this machine: PostgreSQL, Redis, S3 (moto), two workers; the demo through them
	@$(PY) scripts/fleet_demo.py

worker: ## fleet mode: start the pools file's worker WORKER=name on this host (see README "Fleet")
	@test -n "$(WORKER)" || { echo "usage: make worker WORKER=<name from pools.toml>"; exit 2; }
	ARENA_DAGSTER_MODE=fleet $(VENV)/bin/arena worker start --worker $(WORKER)

test: setup browser ## the whole suite, end-to-end tests included
	$(PY) -m pytest -ra

test-fast: setup ## everything but the slow end-to-end tests
	$(PY) -m pytest -ra -m 'not slow'

clean: down
	rm -rf $(ARENA_HOME)
