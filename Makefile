# pyinfra-galaxy-slurm. Run as root on a Debian 12 machine: the lab boots containers.
#   make demo    lab up (head + 2 compute), deploy, verify
#   make test    unit tests, then a fresh test lab: deploy, re-run, host checks
#   make check   host checks over SSH (changes nothing) of INVENTORY's hosts (default inventory.py)
# The lab's and the tests' environment variables (LAB_*, TEST_*, RELEASE, SLURM_DRMAA_TARBALL, KEEP_LAB,
# REQUIRE_DRMAA...), their defaults and meanings: lab/settings.py (`python3 lab/settings.py` lists them).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
RELEASE ?= trixie
NODES ?= 2
LAB_NAME ?= pgs
LAB_SUBNET ?= 10.213.0.0/24
# The lab hosts' SSH login: root, or a normal user with passwordless sudo (root's login then refused).
LAB_SSH_USER ?= root
export TEST_LAB_SSH_USER ?= $(LAB_SSH_USER)
LAB := $(PYTHON) lab/lab.py --name $(LAB_NAME) --subnet $(LAB_SUBNET)
# The lab's own inventory (lab/inventory.py) reads the hosts of lab LAB_NAME; inventory.py is the admin's.
export LAB_NAME
LAB_INVENTORY_FILE := lab/inventory.py
# make check: the cluster to check, and where the JUnit XML report goes.
INVENTORY ?= inventory.py
CHECK_REPORT ?= check-report.xml
export RELEASE
# A slurm-drmaa release tarball, for Galaxy's DRMAA runner in the lab (whose hosts
# reach no release downloads): the project's test data beside the checkout
# (../shared/slurm-drmaa/), used by path. `make lab-up` records it in the lab it makes
# (hosts.json), and every later deploy of that lab keeps the DRMAA runner, whatever its
# environment; a lab made without one uses the CLI runner (`make lab-status` says which).
# The tests switch their lab to it; without it the DRMAA tests are skipped (or fail,
# with REQUIRE_DRMAA=1 as in CI).
SLURM_DRMAA_TARBALL ?= $(wildcard $(abspath ../shared/slurm-drmaa/slurm-drmaa-1.1.6.tar.gz))
export SLURM_DRMAA_TARBALL

.PHONY: all demo test unit lab-test check bench deploy lab-up lab-down lab-status deps venv clean

all: test

# Host tools the lab needs (containers, base images, NAT).
deps:
	@command -v systemd-nspawn >/dev/null && command -v mmdebstrap >/dev/null && command -v iptables >/dev/null \
	  || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	       systemd-container mmdebstrap iptables debian-archive-keyring >/dev/null; }

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

demo: deps venv lab-up deploy

deploy: venv
	$(VENV)/bin/pyinfra -y $(LAB_INVENTORY_FILE) deploy.py

lab-up: deps
	$(LAB) up --nodes $(NODES) --release $(RELEASE) --ssh-user $(LAB_SSH_USER) --drmaa-tarball '$(SLURM_DRMAA_TARBALL)'

lab-down:
	$(LAB) down

lab-status:
	$(LAB) status

test: deps venv unit lab-test

unit: venv
	$(VENV)/bin/pytest tests/unit

lab-test: venv
	$(VENV)/bin/pytest tests/lab

# Host checks of a deployed cluster (read-only): one line per host and check, and a JUnit XML file.
# `make check INVENTORY=lab/inventory.py` checks the demo lab; CHECK_ARGS="--ssh-user debian --sudo" as for pyinfra.
check: venv
	$(VENV)/bin/pytest checks --inventory $(INVENTORY) --junitxml=$(CHECK_REPORT) -q --tb=no -rN -p no:cacheprovider $(CHECK_ARGS)

# Timings on the lab (its own lab, fresh hosts each time): bench/results.json and a table.
bench: deps venv
	$(VENV)/bin/python bench/bench.py --release $(RELEASE)

clean: lab-down
	rm -rf $(VENV) .secrets
