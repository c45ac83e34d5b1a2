# Two commands do everything on a fresh clone:  make run   and   make test
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE ?= 1

.PHONY: setup browser run test lint bench deploy worker

# torch is pinned first: 2.13.0 is the CPU build on this machine's disk; an unpinned torch
# (or a newer one) pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

# Headless Chromium opens reports/index.html in the report's browser test and takes the README's screenshot:
# Debian's package, installed when missing and this is root; otherwise that test is skipped, saying why.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium (the report's browser test)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && \
	      apt-get install -y -qq chromium >/dev/null 2>&1; } || echo "could not install chromium: its test is skipped"; \
	  else echo "no chromium and not root: the browser test of reports/index.html is skipped"; fi; }

run: setup browser
	dvc repro
	python docs/figures.py  # README and docs figures follow metrics/ (tests/test_docs.py checks them)
	python -m distill.report.browser reports/index.html docs/report.png  # the README's picture of the run
	@sed -n '/^| system/,/^$$/p' reports/eval.md
	@grep -E '^(Held-out KL|Forgetting probe)' reports/eval.md; echo
	@sed -n '/^| subset/,/^$$/p' reports/sweep.md
	@echo "the whole run on one page: reports/index.html (open it from disk); Data Docs: reports/gx/index.html"
	@echo "reports: reports/eval.md, reports/sweep.md; all metrics: dvc metrics show; plots: dvc plots show"

# -m "not long": the reliability suite's long variants run in python benchmarks/reliability.py (or pytest -m long)
test: setup browser
	pytest -n 2 --dist loadgroup --durations=15 -m "not long"  # two workers; a module stays on one (conftest.py)

lint: setup
	ruff check distill stages flows demo tests benchmarks docs

bench: setup
	python benchmarks/pipeline.py

# Scheduling (README, "Schedule it"): needs a Prefect server, PREFECT_API_URL set. DEPLOY_ARGS, e.g.
# DEPLOY_ARGS='--teacher-rpm 500 --cron "0 3 * * 1-5"', is passed to distill deploy.
deploy: setup
	distill deploy $(DEPLOY_ARGS)

worker: setup
	prefect worker start --pool distill
