# magrathea.secure: everything a new machine needs is installed from here.
#   make demo   run playbooks/demo.yml against a throwaway sandbox
#   make test   sanity, units, sandbox tests and integration tests
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
COLLECTION_LINK := .ansible/collections/ansible_collections/magrathea/secure
# ansible-test needs the collection under a real ansible_collections/<ns>/<name> path (not a symlink).
TEST_ROOT := $(CURDIR)/build/test/ansible_collections/magrathea/secure
SANDBOX_DIR ?= $(CURDIR)/build/sandbox
DEMO_SANDBOX := $(CURDIR)/build/demo-sandbox
TEST_SANDBOX := $(CURDIR)/build/test-sandbox
# Debian packages the real-component tests use.
DEBIAN_PACKAGES := vsftpd lftp curl openssl libnss3-tools chromium openjdk-17-jdk-headless ca-certificates-java unzip util-linux shellcheck
ANSIBLE_TEST_PYTHON := 3.11

.PHONY: help venv collection deps ansible-test-offline sandbox-up sandbox-down demo test sanity units sandbox-tests integration \
	test-tree test-playbooks test-trust-clients lint docs docs-lint changelog ee bench-ntsapi bench-cdr bench-trust clean

help:
	@echo "make demo      run the demo playbook against a local Magrathea sandbox"
	@echo "make test      run sanity, units, sandbox, lint, docs-lint, integration and playbook tests"
	@echo "make docs      build the HTML reference and guide into build/docs/html"
	@echo "make sandbox-up SANDBOX_DIR=DIR / make sandbox-down SANDBOX_DIR=DIR"
	@echo "make integration TARGETS=\"sandbox cdr_sync\"   run some integration targets only"
	@echo "make bench-ntsapi | bench-cdr | bench-trust"

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
	touch $@

collection: $(COLLECTION_LINK)

$(COLLECTION_LINK):
	mkdir -p $(dir $@)
	ln -sfn ../../../.. $@

# Debian packages for the real-component tests (vsftpd, lftp, certutil, keytool, Chromium).
deps:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "deps: all Debian packages present"; \
	elif [ "$$(id -u)" = 0 ]; then echo "deps: installing $$missing"; apt-get update -qq; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else echo "deps: missing Debian packages: $$missing; run 'sudo apt-get install $$missing' or make test as root" >&2; exit 1; fi

# ansible-test downloads get-pip.py from a host that is not reachable here; seed its cache with an ensurepip stand-in.
ansible-test-offline: venv
	$(PY) tests/utils/seed_ansible_test_pip.py

sandbox-up: venv
	$(PY) -m sandbox up --dir $(SANDBOX_DIR)

sandbox-down: venv
	$(PY) -m sandbox down --dir $(SANDBOX_DIR)

demo: venv collection
	@$(PY) -m sandbox up --dir $(DEMO_SANDBOX) >/dev/null
	@trap '$(PY) -m sandbox down --dir $(DEMO_SANDBOX) >/dev/null' EXIT; \
	set -a; . $(DEMO_SANDBOX)/sandbox.env; set +a; \
	MAGRATHEA_DEMO_DIR=$(CURDIR)/build/demo $(BIN)/ansible-playbook playbooks/demo.yml

# A copy of the tracked (and untracked, not ignored) files, where ansible-test wants the collection to be.
test-tree: collection
	rm -rf $(TEST_ROOT) && mkdir -p $(TEST_ROOT)
	git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -cf - -T - 2>/dev/null | tar -xf - -C $(TEST_ROOT)
	@# The copy sits inside this repository's ignored build/ folder: give it a repository of its own so ansible-test sees its files.
	cd $(TEST_ROOT) && git init -q && git add -A

sanity: venv ansible-test-offline test-tree
	cd $(TEST_ROOT) && $(BIN)/ansible-test sanity --venv --python $(ANSIBLE_TEST_PYTHON) --color no

units: venv ansible-test-offline test-tree
	cd $(TEST_ROOT) && $(BIN)/ansible-test units --venv --python $(ANSIBLE_TEST_PYTHON) --color no

sandbox-tests: venv deps
	$(PY) -m pytest -q -p no:cacheprovider tests/sandbox

integration: venv deps collection test-tree
	@$(PY) -m sandbox up --dir $(TEST_SANDBOX) >/dev/null
	@trap '$(PY) -m sandbox down --dir $(TEST_SANDBOX) >/dev/null' EXIT; \
	$(PY) tests/utils/integration_config.py $(TEST_SANDBOX)/sandbox.json $(PY) $(TEST_ROOT) > $(TEST_ROOT)/tests/integration/integration_config.yml; \
	cd $(TEST_ROOT) && $(BIN)/ansible-test integration --local --python $(ANSIBLE_TEST_PYTHON) --color no $(TARGETS)

# Every playbook against a sandbox, in check mode and for real, inside a private mount namespace over the trust stores.
test-playbooks: venv deps collection
	tests/utils/test_playbooks.sh

# Real clients (curl, openssl, Python, every JDK, headless Chromium) refuse, accept, then refuse the sandbox again as the
# trust role installs and removes its root, inside a private mount namespace over the host's stores.
test-trust-clients: venv deps collection
	tests/utils/test_trust_clients.sh

lint: venv collection
	$(BIN)/ansible-lint

docs-lint: venv collection
	LINT_ONLY=1 tests/utils/build_docs.sh

# HTML reference and guide in build/docs/html.
docs: venv collection
	tests/utils/build_docs.sh

# CHANGELOG.md from changelogs/changelog.yaml and the fragments.
changelog: venv collection
	$(BIN)/antsibull-changelog lint
	PATH=$(BIN):$$PATH ANSIBLE_COLLECTIONS_PATH=$(CURDIR)/.ansible/collections $(BIN)/antsibull-changelog generate

# Build context for an execution environment (ansible-builder create).
ee: venv
	tests/utils/build_ee.sh

test: venv deps
	$(MAKE) --no-print-directory sanity
	$(MAKE) --no-print-directory units
	$(MAKE) --no-print-directory sandbox-tests
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory docs-lint
	$(MAKE) --no-print-directory integration
	$(MAKE) --no-print-directory test-playbooks
	$(MAKE) --no-print-directory test-trust-clients

bench-ntsapi: venv deps collection
	$(PY) tests/bench/bench_ntsapi.py

bench-cdr: venv deps collection
	$(PY) tests/bench/bench_cdr.py

# community.general.java_cert, from the ansible package release that matches ansible-core 2.19, is the baseline.
bench-trust: venv deps collection
	test -d build/ansible-pkg/ansible_collections/community/general || \
		$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --target build/ansible-pkg ansible==12.3.0
	TRUST_BENCH_ANSIBLE_PKG=$(CURDIR)/build/ansible-pkg $(PY) tests/bench/bench_trust.py

clean:
	rm -rf build tests/output
