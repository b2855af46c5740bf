# MLOps platform on Apache Airflow 3. Two commands do everything on a fresh machine:
#   make demo   set up, start the local stack, run the main job through Airflow
#   make test   set up, lint, run the whole test suite
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
UV     := $(BIN)/uv
export PATH := $(BIN):$(PATH)
# Relative settings paths, .env, dags/ and plugins/ are taken from here (mlops.config.defaults.project_dir).
export MLOPS_PROJECT_DIR ?= $(CURDIR)

RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP     := $(VENV)/.dev-installed

.PHONY: help venv install install-dev lock up down status demo test lint format bench clean podman monitoring postgres

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(UV): $(BIN)/python requirements-bootstrap.txt
	$(BIN)/pip install --quiet -r requirements-bootstrap.txt
	@touch $(UV)

venv: $(UV) ## create the virtualenv (Python 3.11) with uv inside it

$(RUNTIME_STAMP): $(UV) requirements.txt pyproject.toml
	$(UV) pip install --python $(BIN)/python -r requirements.txt
	$(UV) pip install --python $(BIN)/python --no-deps -e .
	@touch $@

$(DEV_STAMP): $(RUNTIME_STAMP) requirements-dev.txt
	$(UV) pip install --python $(BIN)/python -r requirements.txt -r requirements-dev.txt
	@touch $@

install: $(RUNTIME_STAMP) ## install the runtime lock and the mlops package (editable)

install-dev: $(DEV_STAMP) ## install the runtime lock, the test/lint lock and the package

lock: $(UV) ## regenerate requirements.txt and requirements-dev.txt from the .in files
	$(UV) pip compile --quiet --python-version 3.11 -o requirements.txt requirements.in
	$(UV) pip compile --quiet --python-version 3.11 -o requirements-dev.txt requirements-dev.in

up: install ## start Airflow (UI :8080) and MLflow (:5000) on 127.0.0.1, wait until healthy
	$(BIN)/mlops stack up

down: ## stop exactly what `make up` started
	@if [ -x $(BIN)/mlops ]; then $(BIN)/mlops stack down; else echo "nothing installed, nothing running"; fi

status: ## show each part of the local stack and its health
	@$(BIN)/mlops stack status

demo: up ## set up, start the stack, run the main job through Airflow and print a summary
	$(BIN)/mlops demo

lint: install-dev ## ruff lint + format check, mypy on include/ and plugins/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/ruff check --select AIR3 --preview dags plugins
	$(BIN)/mypy include plugins

format: install-dev ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint ## set up, lint, run the whole test suite (unit, DAG policy, integration)
	$(BIN)/pytest

bench: install-dev ## run the benchmarks and rewrite docs/BENCHMARKS.md
	$(BIN)/python bench/run.py

clean: down ## stop the stack and delete local state (.mlops/, data/)
	rm -rf .mlops data

podman: ## install Podman and serve the Docker API on /run/podman/podman.sock (root; for the docker backend)
	bash .ci/setup-podman.sh

postgres: ## install PostgreSQL's server binaries from Debian (root; for the alert ledger's PostgreSQL tests)
	bash .ci/setup-postgres.sh

monitoring: ## install Prometheus, Alertmanager, Pushgateway from Debian (root; `make up` then runs them)
	bash .ci/setup-monitoring.sh

.PHONY: image
image: install ## training image; MODEL=churn [VERSION=3]: serving image of @champion (or VERSION), pushed + recorded
	$(BIN)/python -m mlops.packaging $(if $(MODEL),serving --model $(MODEL) --version $(or $(VERSION),@champion),training)
