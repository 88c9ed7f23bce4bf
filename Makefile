# tympan: every install step lives here so that a fresh clone (and CI) gets the same environment.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help install run test test-all lint bench bench-peer clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install: $(VENV)/.installed ## create .venv with PyTorch and tympan (editable) plus test tools

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.14.1 torchvision==0.29.1
	$(PIP) install --quiet torchaudio==2.11.0
	$(PIP) install --quiet -e '.[mlops,test]'
	touch $@

run: install ## run the default experiment (params.yaml) with dvc repro
	dvc repro
	tympan show runs/default

test: install ## the test suite (fast tests; slow ones with `make test-all`)
	$(PY) -m pytest

lint: install ## ruff lint and format check
	ruff check tympan tests bench
	ruff format --check tympan tests bench

test-all: install ## every test, slow ones included
	$(PY) -m pytest -m ''

bench: install ## data path vs compute limit, and serving latency (after `make run`)
	$(PY) bench/train_speed.py
	$(PY) bench/serve_latency.py runs/default/bundle
	$(PY) bench/end_to_end.py --run runs/default

bench-peer: install ## tympan vs autrainer on autrainer's FSDD config (about 15 minutes)
	$(PY) bench/peer_speed.py

clean: ## remove runs and derived data (keeps .venv)
	rm -rf runs data/features
