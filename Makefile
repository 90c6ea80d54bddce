# citystream — run `make help` for the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CS := $(BIN)/citystream
DURATION ?= 0
SOAK_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,bench]'
	@touch $@

.PHONY: venv
venv: $(BIN)/.installed ## Create .venv and install the project with its dev tools

.PHONY: up
up: venv ## Install (if needed) and start Mosquitto, Kafka and InfluxDB as native processes
	$(CS) stack up

.PHONY: down
down: venv ## Stop the local services
	$(CS) stack down

.PHONY: status
status: venv ## Show each service's version, port and health
	$(CS) stack status

.PHONY: lint
lint: venv ## ruff (lint and format check) and mypy (strict)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

.PHONY: test
test: venv ## Fresh machine to green: venv, stack up, lint, unit + integration + e2e tests, stack down
	@scripts/test.sh

.PHONY: unit
unit: venv ## Unit tests only (no services)
	$(BIN)/pytest tests/unit -q

.PHONY: demo
demo: venv ## The whole pipeline on simulated Seoul sensors (DURATION=seconds, 0 = until Ctrl-C)
	$(CS) stack up
	$(CS) demo --duration $(DURATION)

.PHONY: bench
bench: venv ## Benchmarks on the real local stack; results in bench/results/
	$(CS) stack up
	$(CS) bench

.PHONY: soak
soak: venv ## Soak: 30 min at 70% of the knee; RSS, lag, error logs, loss (SOAK_ARGS="--minutes 5")
	$(CS) stack up
	$(CS) soak $(SOAK_ARGS)

.PHONY: chaos
chaos: venv ## Chaos run: kill -9 each stage and service in turn under load; account for every reading (CHAOS_ARGS="--quick")
	$(CS) stack up
	$(CS) chaos $(CHAOS_ARGS)

.PHONY: dashboards
dashboards: venv ## Generate and check the Grafana dashboards
	$(CS) dashboards build
	$(CS) dashboards check

.PHONY: clean
clean: ## Remove caches (not the services' data)
	rm -rf .mypy_cache .ruff_cache .pytest_cache .hypothesis
