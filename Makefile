# Entry points: `make demo` (the product on local emulators), `make test` (what CI
# runs), `make bench`, `make tools` and `make reference` (the command references). Each installs only what is missing: moto in
# .venv/, the parliament IAM policy linter in .venv-policy/, Debian's docker-registry
# and runc.

SHELL := /bin/bash
CARGO ?= cargo
VENV := .venv
MOTO_VERSION := 5.2.5
# botocore's service models are the constraints the AWS proxy holds requests to
# (fakes/src/service_model.rs): pinned, so a test does not change with a new release.
BOTOCORE_VERSION := 1.44.8
MOTO_STAMP := $(VENV)/.moto-$(MOTO_VERSION)-botocore-$(BOTOCORE_VERSION)
# Its own virtualenv: parliament pins boto3, which must not move moto's botocore.
POLICY_VENV := .venv-policy
PARLIAMENT_VERSION := 1.6.4
PARLIAMENT_STAMP := $(POLICY_VENV)/.parliament-$(PARLIAMENT_VERSION)
REGISTRY := /usr/bin/docker-registry
# The OCI runtime the local Fargate (fakes/src/fargate.rs) runs tasks with: wherever the
# system put it, else Debian's path, which apt-get fills.
RUNC := $(shell command -v runc 2>/dev/null || echo /usr/sbin/runc)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test bench tools fmt lint unit reference

## demo: moto, the registry and the fakes; push-image, diff, up, verify, run both jobs, status
demo: tools
	@bash scripts/demo.sh

## test: install missing tools, then formatting, lints and every test
test: tools fmt lint unit

## bench: every script in bench/, then one table of the ratios
bench: tools
	@bash bench/all.sh

## reference: write docs/reference/*.md again: the three binaries' command lines, the environment file's keys
reference:
	$(CARGO) build --quiet -p deployer -p qbo-invoice-processor -p fakes
	@dir=$${CARGO_TARGET_DIR:-target}/debug; for bin in deployer qbo-invoice-processor fakes; do \
	  $$dir/$$bin --markdown-help >docs/reference/$$bin.md && echo "docs/reference/$$bin.md"; done
	UPDATE_REFERENCE=1 $(CARGO) test --quiet -p infra --test it -- reference::the_environment_reference >/dev/null && echo docs/reference/environment.md

## tools: moto (the AWS emulator) in .venv/, the policy linter, the reference container registry and runc
tools: $(MOTO_STAMP) $(PARLIAMENT_STAMP) $(REGISTRY) $(RUNC)

$(MOTO_STAMP):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'moto[server]==$(MOTO_VERSION)' 'botocore==$(BOTOCORE_VERSION)' 'boto3==$(BOTOCORE_VERSION)'
	touch $@

# setuptools: parliament 1.6 imports pkg_resources.
$(PARLIAMENT_STAMP):
	python3 -m venv $(POLICY_VENV)
	$(POLICY_VENV)/bin/pip install --quiet --disable-pip-version-check 'parliament==$(PARLIAMENT_VERSION)' 'setuptools<81'
	touch $@

$(REGISTRY):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-registry

$(RUNC):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends runc

fmt:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# The integration tests mostly wait (on emulators, rate limits, settle times), so they
# run more at once than there are cores.
unit:
	$(CARGO) test --workspace --locked -- --test-threads 6
