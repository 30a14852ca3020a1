# Every entry point a person needs. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: help build test lint fmt crds crds-check validate-crds

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

build: ## build every binary (debug)
	$(CARGO) build --workspace --locked

test: ## unit, integration and e2e tests (starts its own PostgreSQL; see README for set-up)
	$(CARGO) test --workspace --locked

lint: ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

crds: ## regenerate crds/*.yaml and the chart's copy from crds/src
	$(CARGO) run --quiet --locked -p sluice-crds --bin crdgen

crds-check: ## fail when the committed CRD YAML differs from what crdgen writes
	$(CARGO) run --quiet --locked -p sluice-crds --bin crdgen -- --check

validate-crds: ## validate the CRD YAML against the Kubernetes schema (pip: kubernetes-validate)
	kubernetes-validate --strict --kubernetes-version 1.33.0 crds/*.yaml
