# Two commands for a fresh machine: `make demo` (a real promotion in the local lab) and
# `make test` (everything the suite needs, then the suite). Both install what is missing.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# pip warns about every local index folder this machine's pip.conf names; keep the rest.
QUIET_PIP := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
PYTHON ?= python3
VENV := .venv
VENV2 := .venv-airflow2
AWSCLI := .venv-awscli
PY := $(VENV)/bin/python
LAB_DEBS := skopeo podman runc docker-registry apache2-utils haproxy debootstrap awscli uidmap fuse-overlayfs openssl ca-certificates util-linux busybox-static
# The lab's Kubernetes (tests/lab/cluster.py): its node's runtime, pod network and cluster DNS,
# and a C compiler for the pause image.
LAB_DEBS += containerd containernetworking-plugins dnsmasq-base iproute2 gcc libc6-dev

.PHONY: help venv venv-airflow2 lab-deps lint typecheck unit unit-airflow2 resolve-check lab-test lab-test-podman cluster-test test demo lab-up lab-down bench clean

help:
	@echo "make demo   - start the local lab, promote a two-platform image through the operator's pod"
	@echo "make test   - install what is missing, lint, type-check, run unit tests (newest and oldest supported"
	@echo "              Airflow + providers), check pip resolves the package under each release's constraint pins,"
	@echo "              and run the lab tests"

$(VENV)/.done: pyproject.toml requirements/airflow3.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip $(QUIET_PIP)
	$(VENV)/bin/pip install -q -r requirements/airflow3.txt -e '.[test]' $(QUIET_PIP)
	touch $@

$(VENV2)/.done: pyproject.toml requirements/airflow2.txt
	$(PYTHON) -m venv $(VENV2)
	$(VENV2)/bin/pip install -q --upgrade pip $(QUIET_PIP)
	$(VENV2)/bin/pip install -q -r requirements/airflow2.txt -e '.[test]' $(QUIET_PIP)
	touch $@

$(AWSCLI)/.done: requirements/awscli.txt
	$(PYTHON) -m venv $(AWSCLI)
	$(AWSCLI)/bin/pip install -q -r requirements/awscli.txt $(QUIET_PIP)
	touch $@

venv: $(VENV)/.done $(AWSCLI)/.done
venv-airflow2: $(VENV2)/.done $(AWSCLI)/.done

# The lab's Debian packages; needs root (CI and these machines run as root).
lab-deps:
	@missing=""; for p in $(LAB_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: venv
	$(VENV)/bin/ruff check airflow_ecr_promote tests dags bench
	$(VENV)/bin/ruff format --check airflow_ecr_promote tests dags bench

typecheck: venv
	$(VENV)/bin/mypy

unit: venv
	$(PY) -m pytest -m "not lab" -q -p no:cacheprovider --durations=15

unit-airflow2: venv-airflow2
	$(VENV2)/bin/python -m pytest -m "not lab" -q -p no:cacheprovider --durations=15

# pip resolves the package (dry run, whole dependency tree) under each supported Airflow release's
# constraint pins, recorded in requirements/constraints-pins.toml.
resolve-check: venv
	$(PY) -m tests.resolve_check

# The lab tests: those on podman, then those on the lab's real Kubernetes (marked `cluster`).
lab-test: lab-test-podman cluster-test

lab-test-podman: venv lab-deps
	$(PY) -m pytest -m "lab and not cluster" -q -p no:cacheprovider --durations=15

# The lab tests that run pods on the lab's real Kubernetes (tests/lab/cluster.py), on both
# supported Airflow versions: on 2.11, KPO's sync and deferrable paths, whole DAG runs (mapping,
# assets, the deploy DAG) through its task runner, and EKS by name with that release's provider.
# Three workers (pytest-xdist, whole files each, longest first: tests/lab/conftest.py), each with a
# lab and cluster of its own (from ECR_PROMOTE_LAB_BIND: .1, .21, .41): a test mostly waits on pods
# and registries. One after the other, 97 of these tests took 18 minutes; on three workers 137 took
# 24, 15 of them one test's hang, fixed since (README: make test).
cluster-test: venv venv-airflow2 lab-deps
	$(PY) -m pytest -m cluster -q -p no:cacheprovider -n 3 --dist loadfile --no-loadscope-reorder --durations=0 --durations-min=5
	$(VENV2)/bin/python -m pytest -m cluster -q -p no:cacheprovider -n 2 --dist loadfile --no-loadscope-reorder \
	  tests/lab/test_cluster_e2e.py tests/lab/test_airflow_native_e2e.py tests/lab/test_eks_e2e.py

# Two builds run in the background. The lab's Kubernetes (tests/lab/kubebuild.py: 15 to 30
# minutes on a fresh machine, the longest step) starts first, on the machine's python3, while pip
# fills the virtualenvs; the lab's images and Go tools (about 10 minutes) start once they exist,
# while the checks that need no lab run. Then the podman lab tests (a lab of their own, on
# 127.0.0.2) and the cluster tests (once the cluster is built) run side by side: much of both is
# waiting (registry round trips, retries' backoff, pods starting), which the other fills.
# Each build runs in a session of its own, so a failed step stops it with its compilers.
test: lab-deps
	@setsid -w $(PYTHON) -m tests.lab.kubebuild > .lab-cluster-build.log 2>&1 & kube=$$!; \
	stop_kube() { kill -- -$$kube 2>/dev/null; wait $$kube; }; \
	$(MAKE) --no-print-directory venv venv-airflow2 || { stop_kube; exit 1; }; \
	setsid -w $(PY) -m tests.lab images > .lab-images.log 2>&1 & images=$$!; \
	$(MAKE) --no-print-directory lint typecheck unit unit-airflow2 resolve-check; checks=$$?; \
	wait $$images; built=$$?; cat .lab-images.log; \
	[ $$built -eq 0 ] || echo "building the lab images failed (exit $$built)"; \
	if [ $$checks -ne 0 ] || [ $$built -ne 0 ]; then stop_kube; exit 1; fi; \
	ECR_PROMOTE_LAB_BIND=127.0.0.2 $(MAKE) --no-print-directory lab-test-podman > .lab-podman.log 2>&1 & podman=$$!; \
	wait $$kube; kbuilt=$$?; cat .lab-cluster-build.log; \
	if [ $$kbuilt -eq 0 ]; then $(MAKE) --no-print-directory cluster-test; cluster=$$?; \
	else echo "building the lab's Kubernetes failed (exit $$kbuilt)"; cluster=1; fi; \
	wait $$podman; podman=$$?; echo "== the podman lab tests:"; cat .lab-podman.log; \
	[ $$cluster -eq 0 ] && [ $$podman -eq 0 ]

demo: $(VENV)/.done lab-deps
	$(PY) -m tests.lab.demo

# `make lab-up CLUSTER=1` also starts the lab's Kubernetes.
lab-up: venv lab-deps
	$(PY) -m tests.lab up $(if $(CLUSTER),--cluster)

lab-down:
	$(PY) -m tests.lab down

BENCHES := copy_script batch_vs_pods engines batch_scale signatures ecr_front single_promotion scan_gate load

# Every bench runs, even after one misses its target; the exit status says which missed.
bench: venv lab-deps
	@missed=""; for b in $(BENCHES); do \
	  echo "== bench/$$b.py"; $(PY) bench/$$b.py || missed="$$missed $$b"; \
	done; \
	if [ -n "$$missed" ]; then echo "benches that missed their target or failed:$$missed"; exit 1; fi

clean:
	rm -rf $(VENV) $(VENV2) $(AWSCLI) .pytest_cache .mypy_cache .ruff_cache
