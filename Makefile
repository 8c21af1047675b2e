# Copyright (c) contributors to magrathea.secure
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

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
# Debian packages the demo needs on a bare Debian 12: certutil for its throwaway NSS database, a JRE's keytool and
# the cacerts it copies into a throwaway keystore (the venv target adds python3-venv when Python lacks ensurepip).
DEMO_DEBIAN_PACKAGES := libnss3-tools openjdk-17-jre-headless ca-certificates-java
# Debian packages the real-component tests use (php-cli and Net::Telnet: the public NTSAPI clients the sandbox must serve).
DEBIAN_PACKAGES := vsftpd lftp curl openssl libnss3-tools chromium openjdk-17-jdk-headless ca-certificates-java unzip util-linux shellcheck \
	php-cli libnet-telnet-perl
ANSIBLE_TEST_PYTHON := 3.11
# What `make venv` installs into $(VENV); what test-packaged installs next to the built collection.
VENV_REQUIREMENTS := requirements-test.txt
RUNTIME_REQUIREMENTS := $(CURDIR)/requirements.txt
PACKAGED_TEST_DIR := $(CURDIR)/build/packaged-test
# The version matrix (make matrix): besides ansible-core 2.19 on Python 3.11 in .venv, ansible-core 2.20 on Python 3.13
# in a venv of its own, with requirements.txt (ansible-core replaced) and requirements-sandbox.txt.
MATRIX_ANSIBLE_CORE := 2.20.10
MATRIX_PYTHON_VERSION := 3.13
MATRIX_PYTHON ?= $(or $(lastword $(sort $(wildcard $(HOME)/.pyenv/versions/$(MATRIX_PYTHON_VERSION).*/bin/python$(MATRIX_PYTHON_VERSION)))),python$(MATRIX_PYTHON_VERSION))
MATRIX_DIR := $(CURDIR)/build/matrix
MATRIX_VENV := $(MATRIX_DIR)/venv-ansible-core-$(MATRIX_ANSIBLE_CORE)
MATRIX_RUNTIME_REQUIREMENTS := $(MATRIX_DIR)/requirements-ansible-core-$(MATRIX_ANSIBLE_CORE).txt
MATRIX_REQUIREMENTS := $(MATRIX_DIR)/requirements-ansible-core-$(MATRIX_ANSIBLE_CORE)-sandbox.txt
# The integration targets that run on 2.20 too (test-packaged runs every module, role and playbook there once):
# FTPS with TLS session reuse (Python's ssl), the trust role (role argument specs, three trust modules, trust_check),
# NTSAPI with check and diff mode, REST.
MATRIX_TARGETS := cdr_sync trust_role ntsapi_number balance_info

.PHONY: help venv collection deps demo-deps ansible-test-offline sandbox-up sandbox-down demo test sanity units sandbox-tests integration \
	test-tree test-playbooks test-trust-clients test-packaged test-fresh-machine matrix fleet-test license-lint lint docs docs-lint changelog ee bench-ntsapi bench-cdr \
	bench-trust clean

help:
	@echo "make demo      run the demo playbook against a local Magrathea sandbox"
	@echo "make test      run sanity, units, sandbox, lint, docs-lint, integration and playbook tests"
	@echo "make docs      build the HTML reference and guide into build/docs/html"
	@echo "make sandbox-up SANDBOX_DIR=DIR / make sandbox-down SANDBOX_DIR=DIR"
	@echo "make integration TARGETS=\"sandbox cdr_sync\"   run some integration targets only"
	@echo "make bench-ntsapi | bench-cdr | bench-trust"

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-sandbox.txt requirements-test.txt
	@# Debian's python3 has no ensurepip (so no venv) without python3-venv.
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || tests/utils/debian_packages.sh venv python3-venv
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r $(VENV_REQUIREMENTS)
	touch $@

collection: $(COLLECTION_LINK)

$(COLLECTION_LINK):
	mkdir -p $(dir $@)
	ln -sfn ../../../.. $@

# Debian packages for the real-component tests (vsftpd, lftp, certutil, keytool, Chromium).
deps:
	@tests/utils/debian_packages.sh test $(DEBIAN_PACKAGES)

demo-deps:
	@tests/utils/debian_packages.sh demo $(DEMO_DEBIAN_PACKAGES)

# ansible-test downloads get-pip.py from a host that is not reachable here; seed its cache with an ensurepip stand-in.
ansible-test-offline: venv
	$(PY) tests/utils/seed_ansible_test_pip.py

sandbox-up: venv
	$(PY) -m sandbox up --dir $(SANDBOX_DIR)

sandbox-down: venv
	$(PY) -m sandbox down --dir $(SANDBOX_DIR)

demo: demo-deps venv collection
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

# Inside a private copy-on-write /etc: targets that create users (the lftp role's) never change this machine's.
integration: venv deps collection test-tree
	@$(PY) -m sandbox up --dir $(TEST_SANDBOX) >/dev/null
	@trap '$(PY) -m sandbox down --dir $(TEST_SANDBOX) >/dev/null' EXIT; \
	$(PY) tests/utils/integration_config.py $(TEST_SANDBOX)/sandbox.json $(PY) $(TEST_ROOT) > $(TEST_ROOT)/tests/integration/integration_config.yml; \
	cd $(TEST_ROOT) && $(CURDIR)/tests/utils/private_etc.sh $(BIN)/ansible-test integration --local --python $(ANSIBLE_TEST_PYTHON) --color no $(TARGETS)

# Every playbook against a sandbox, in check mode and for real, inside a private mount namespace over the trust stores.
test-playbooks: venv deps collection
	tests/utils/test_playbooks.sh

# README's first command on a bare Debian 12 root (debootstrap, chroot, private mount namespace): make demo must pass.
test-fresh-machine:
	tests/utils/fresh_machine_demo.sh

# The built collection as Galaxy users get it: installed into a fresh venv with requirements.txt only, run from outside
# the repository against a sandbox (tests/utils/test_packaged.sh).
test-packaged: venv deps
	PYTHON=$(PYTHON) REQUIREMENTS=$(RUNTIME_REQUIREMENTS) SANDBOX_PYTHON=$(PY) PACKAGED_TEST_DIR=$(PACKAGED_TEST_DIR) \
		tests/utils/test_packaged.sh

# With ansible-core $(MATRIX_ANSIBLE_CORE) on Python $(MATRIX_PYTHON_VERSION) (controller and managed host): sanity, the
# MATRIX_TARGETS integration targets and test-packaged, in a test tree and sandbox of their own.
matrix: $(MATRIX_REQUIREMENTS)
	$(MAKE) --no-print-directory sanity integration test-packaged VENV=$(MATRIX_VENV) PYTHON=$(MATRIX_PYTHON) \
		VENV_REQUIREMENTS=$(MATRIX_REQUIREMENTS) RUNTIME_REQUIREMENTS=$(MATRIX_RUNTIME_REQUIREMENTS) \
		ANSIBLE_TEST_PYTHON=$(MATRIX_PYTHON_VERSION) TEST_ROOT=$(MATRIX_DIR)/test/ansible_collections/magrathea/secure \
		TEST_SANDBOX=$(MATRIX_DIR)/sandbox PACKAGED_TEST_DIR=$(MATRIX_DIR)/packaged-test TARGETS="$(MATRIX_TARGETS)"

$(MATRIX_RUNTIME_REQUIREMENTS): requirements.txt
	mkdir -p $(dir $@)
	sed -E 's/^ansible-core==.*/ansible-core==$(MATRIX_ANSIBLE_CORE)/' requirements.txt > $@

$(MATRIX_REQUIREMENTS): $(MATRIX_RUNTIME_REQUIREMENTS) requirements-sandbox.txt
	printf -- '-r %s\n-r %s\n' $(MATRIX_RUNTIME_REQUIREMENTS) $(CURDIR)/requirements-sandbox.txt > $@

# The collection over SSH on a fleet of managed hosts (127.77.0.x, each in namespaces of its own; tests/fleet/fleet.py),
# as a controller and AWX run it. Needs root; installs openssh-server, sudo and mmdebstrap when missing.
FLEET_DIR := $(CURDIR)/build/fleet
fleet-test: venv deps collection
	@$(MAKE) --no-print-directory deps DEBIAN_PACKAGES="openssh-server sudo mmdebstrap"
	$(PY) -m pip install --quiet --disable-pip-version-check -r tests/fleet/requirements.txt
	$(PY) tests/fleet/fleet.py up --dir $(FLEET_DIR)
	@trap '$(PY) tests/fleet/fleet.py down --dir $(FLEET_DIR)' INT TERM; status=0; \
	$(PY) -m pytest -q -p no:cacheprovider tests/fleet || status=$$?; \
	$(PY) tests/fleet/fleet.py down --dir $(FLEET_DIR) || status=1; \
	cat $(FLEET_DIR)/figures.txt 2>/dev/null || true; exit $$status

# Real clients (curl, openssl, Python, every JDK, headless Chromium) refuse, accept, then refuse the sandbox again as the
# trust role installs and removes its root, inside a private mount namespace over the host's stores.
test-trust-clients: venv deps collection
	tests/utils/test_trust_clients.sh

# Every file has its copyright and license (an SPDX header, or REUSE.toml); tests/utils/spdx_headers.py adds headers.
license-lint: venv
	$(BIN)/reuse lint --lines

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
	$(MAKE) --no-print-directory license-lint
	$(MAKE) --no-print-directory docs-lint
	$(MAKE) --no-print-directory integration
	$(MAKE) --no-print-directory test-playbooks
	$(MAKE) --no-print-directory test-trust-clients
	$(MAKE) --no-print-directory test-packaged
	$(MAKE) --no-print-directory test-fresh-machine
	$(MAKE) --no-print-directory fleet-test
	$(MAKE) --no-print-directory matrix

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
