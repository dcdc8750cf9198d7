# make test  - install, build testenv/, lint (ruff, mypy, import layers), run every test
# make demo  - run the main job on three local clusters
# make bench-homelab - the homelab benchmark (bench/bench_homelab.py; BENCH_ARGS="--quick")
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
GO ?= go
TESTENV_BIN := testenv/bin
K8S_BINS := $(TESTENV_BIN)/kube-apiserver $(TESTENV_BIN)/kube-controller-manager
TESTENV_BINS := $(K8S_BINS) $(TESTENV_BIN)/etcd $(TESTENV_BIN)/helm $(TESTENV_BIN)/victoria-logs \
	$(TESTENV_BIN)/registry
SYNAPSE_VENV := testenv/synapse/.venv
GOBUILD := $(GO) build -trimpath
# Stamp the real release into the binaries (a module build cannot read it from git).
K8S_VERSION := $(shell awk '$$1 == "require" && $$2 == "k8s.io/kubernetes" {print $$3}' testenv/k8s/go.mod)
K8S_MINOR := $(word 2,$(subst ., ,$(K8S_VERSION)))
K8S_LDFLAGS := -s $(foreach pkg,k8s.io/component-base/version k8s.io/client-go/pkg/version,\
	-X $(pkg).gitVersion=$(K8S_VERSION) -X $(pkg).gitMajor=1 -X $(pkg).gitMinor=$(K8S_MINOR) \
	-X $(pkg).gitTreeState=clean)

.PHONY: test lint testenv install demo bench-homelab clean

test: install testenv lint
	@$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5)"; exit 0; fi; exit $$rc

install: $(VENV)/.installed

# An editable install compiles nothing to bytecode; a packaged one (see
# systemd/reconciler.service) does, so that no start compiles the sources again:
# compileall gives the tree the same. A source edited later is compiled again on import.
$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m compileall -q reconciler
	touch $@

testenv: $(TESTENV_BINS) $(SYNAPSE_VENV)/.installed

# Synapse, the Matrix homeserver notify tests talk to (testenv/matrix.py), in a venv of
# its own: its pinned dependencies never meet the project's.
$(SYNAPSE_VENV)/.installed: testenv/synapse/requirements.txt
	$(PYTHON) -m venv $(SYNAPSE_VENV)
	$(SYNAPSE_VENV)/bin/pip install --quiet --disable-pip-version-check -r testenv/synapse/requirements.txt
	touch $@

# One `go build` for both: they share most of k8s.io/kubernetes.
$(K8S_BINS) &: testenv/k8s/go.mod testenv/k8s/go.sum
	cd testenv/k8s && $(GOBUILD) -ldflags='$(K8S_LDFLAGS)' -o ../bin/ k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager

$(TESTENV_BIN)/etcd: testenv/etcd/go.mod testenv/etcd/go.sum
	cd testenv/etcd && $(GOBUILD) -ldflags=-s -o ../bin/etcd go.etcd.io/etcd/server/v3

$(TESTENV_BIN)/helm: testenv/helm/go.mod testenv/helm/go.sum
	cd testenv/helm && $(GOBUILD) -ldflags=-s -o ../bin/helm helm.sh/helm/v3/cmd/helm

$(TESTENV_BIN)/victoria-logs: testenv/victorialogs/go.mod testenv/victorialogs/go.sum
	cd testenv/victorialogs && $(GOBUILD) -ldflags=-s -o ../bin/victoria-logs github.com/VictoriaMetrics/VictoriaLogs/app/victoria-logs

# The CNCF distribution registry: OCI chart tests push to it and pull from it.
$(TESTENV_BIN)/registry: testenv/registry/go.mod testenv/registry/go.sum
	cd testenv/registry && $(GOBUILD) -ldflags=-s -o ../bin/registry github.com/distribution/distribution/v3/cmd/registry

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

demo: install testenv
	$(BIN)/python -m testenv.demo

bench-homelab: install testenv
	$(BIN)/python bench/bench_homelab.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(TESTENV_BIN) $(SYNAPSE_VENV)
