# wsfleet — run `make help` for the targets.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FLEET ?= examples/01-minimal-fleet.yaml
LOAD ?=
PYTEST_ARGS ?=

.PHONY: help up test lint bench deps clean cluster cluster-down cluster-build cluster-bin

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

deps: $(STAMP) ## Create .venv and install the project, Redis and Prometheus
	bash hack/install-deps.sh

up: deps ## Run a local fleet from examples/ (FLEET=..., LOAD=wedding-season)
	$(BIN)/wsfleet up -f $(FLEET) $(if $(LOAD),--load $(LOAD),)

COVERED := gateway/wsfleet_gateway/*,operator/wsfleet_operator/*
COV_FLOOR ?= 90

# The real-cluster tests need the control plane of hack/cluster.sh: built here when Go is
# at hand (about 12 minutes once, then cached in ~/.cache/wsfleet); without Go they skip
# and say why (in CI, WSFLEET_CI=1, they fail instead).
cluster-bin:
	@if command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ]; then \
	  bash hack/cluster.sh build; \
	else \
	  echo "make: no Go toolchain: the real-cluster tests (tests/cluster) will be skipped"; \
	fi

test: deps cluster-bin ## Run the test suite; report coverage (gateway + operator must stay >= 90 %)
	$(BIN)/coverage erase
	$(BIN)/coverage run -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)
	$(BIN)/coverage combine -q
	$(BIN)/coverage report
	@echo "== coverage of the gateway and operator code (floor $(COV_FLOOR) %) =="
	$(BIN)/coverage report --include='$(COVERED)' --skip-covered --fail-under=$(COV_FLOOR)

lint: $(STAMP) ## ruff (format + lint), mypy --strict, import-linter's layer contracts
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

cluster-build: ## Build (or reuse) the pinned Kubernetes control plane, etcd and kwok (Go)
	bash hack/cluster.sh build

cluster: cluster-build ## A real Kubernetes control plane here (KUBECONFIG=.cluster/kubeconfig)
	bash hack/cluster.sh up

cluster-down: ## Stop the control plane of `make cluster` and remove .cluster/
	bash hack/cluster.sh down

bench: deps ## Run the benchmark suite; results under bench/results/
	$(BIN)/python -m wsfleet.bench

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .coverage .coverage.* .coverage.xml
