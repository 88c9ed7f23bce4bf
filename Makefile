# tympan: every install step lives here so that a fresh clone (and CI) gets the same environment.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# pytest-xdist processes: one a core, at most 4 (each may hold a model server and a training)
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n < 4 ? n : 4 )))
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help install run test test-slow test-all lint bench bench-peer clean images push-images remote push pull pipeline pipeline-local

# image names and tag (REGISTRY, TAG, BASE_IMAGE, TRAIN_IMAGE, SERVE_IMAGE); override on the command line
include images/images.env
IMAGES := base:$(BASE_IMAGE) train-cuda:$(TRAIN_IMAGE) serve:$(SERVE_IMAGE)

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install: $(VENV)/.installed ## create .venv with PyTorch and tympan (editable) plus test tools

$(VENV)/.installed: pyproject.toml Makefile requirements/torch.txt requirements/torchaudio.txt requirements/no-deps.txt
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements/torch.txt
	$(PIP) install --quiet -r requirements/torchaudio.txt
	$(PIP) install --quiet --no-deps -r requirements/no-deps.txt
	$(PIP) install --quiet -e '.[mlops,serve,test]'
	touch $@

run: install ## run the default experiment (params.yaml) with dvc repro
	dvc repro
	tympan show runs/default

test: install ## the test suite, one process a core (fast tests; slow ones with `make test-slow`)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: install ## ruff lint and format check, hadolint on the Dockerfiles
	ruff check tympan tests bench components pipelines
	ruff format --check tympan tests bench components pipelines
	hadolint images/*/Dockerfile

test-slow: install ## the slow tests only (CI runs them after `make test`)
	$(PY) -m pytest -m slow -n $(TEST_WORKERS) --dist loadfile

test-all: install ## every test, slow ones included
	$(PY) -m pytest -m '' -n $(TEST_WORKERS) --dist loadfile

bench: install ## data path vs compute limit, two trainings side by side, serving latency (after `make run`)
	$(PY) bench/train_speed.py
	$(PY) bench/train_speed.py --concurrent 2
	$(PY) bench/serve_latency.py runs/default/bundle
	$(PY) bench/end_to_end.py --run runs/default

bench-peer: install ## tympan vs autrainer on autrainer's FSDD config, seeds 1-3 (about 1.5 hours on 2 quiet cores), and what each CPU option pays
	$(PY) bench/peer_speed.py
	$(PY) bench/cpu_options.py

images: ## build the CPU base, CUDA training and serving images (needs a Docker engine)
	@command -v docker >/dev/null || { echo "make images: no 'docker' command here; build on a machine with a Docker engine" >&2; exit 1; }
	@set -e; for pair in $(IMAGES); do dir=$${pair%%:*}; name=$${pair#*:}; \
	  echo "building $(REGISTRY)/$$name:$(TAG) from images/$$dir/Dockerfile"; \
	  docker build -f images/$$dir/Dockerfile -t $(REGISTRY)/$$name:$(TAG) .; done

push-images: images ## push the three images to $(REGISTRY) (after `docker login`)
	@set -e; for pair in $(IMAGES); do docker push $(REGISTRY)/$${pair#*:}:$(TAG); done

# DVC's remote `storage` (.dvc/config) on S3, MinIO or Ceph: DVC config cannot read the environment,
# so `remote` writes it into .dvc/config.local (git-ignored). Credentials stay in AWS_* variables.
S3_ENDPOINT = $${AWS_ENDPOINT_URL_S3:-$${AWS_ENDPOINT_URL:-$$MLFLOW_S3_ENDPOINT_URL}}
S3_HINT = is the S3 endpoint ($(S3_ENDPOINT)) up, and are AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY right?
# a quick look at the bucket first (one clear line if the server is down or the keys are wrong),
# then few retries, so a failure takes seconds rather than DVC's minutes
S3_CHECK = python -m tympan.storage check "$$(dvc config remote.storage.url)" "$$(dvc config remote.storage.endpointurl 2>/dev/null)"
S3_RETRIES = AWS_RETRY_MODE=$${AWS_RETRY_MODE:-standard} AWS_MAX_ATTEMPTS=$${AWS_MAX_ATTEMPTS:-3}
# what push and pull carry: the default pipeline (dvc.yaml). The examples' dvc.lock files are committed
# as a record, but their outputs are in the remote only once someone pushes them by name:
#   make push DVC_TARGETS="dvc.yaml experiments/lr-seeds/dvc.yaml"   (and the same for pull)
DVC_TARGETS ?= dvc.yaml

remote: ## point the DVC remote at s3://$TYMPAN_S3_BUCKET/$TYMPAN_S3_PREFIX on $AWS_ENDPOINT_URL (those set)
	@set -e; if [ -n "$$TYMPAN_S3_BUCKET" ]; then \
	  dvc remote modify --local storage url "s3://$$TYMPAN_S3_BUCKET/$${TYMPAN_S3_PREFIX:-dvc}"; fi; \
	endpoint="$(S3_ENDPOINT)"; if [ -n "$$endpoint" ]; then dvc remote modify --local storage endpointurl "$$endpoint"; fi; \
	region="$${AWS_REGION:-$$AWS_DEFAULT_REGION}"; if [ -n "$$region" ]; then dvc remote modify --local storage region "$$region"; fi; \
	dvc remote list

push: remote ## dvc push of dvc.yaml (or DVC_TARGETS): raw audio, features, the default run's states and bundle
	@$(S3_CHECK)
	@$(S3_RETRIES) dvc push $(DVC_TARGETS) || { echo "make push: failed; $(S3_HINT)" >&2; exit 1; }

pull: remote ## dvc pull of dvc.yaml (or DVC_TARGETS): fetch and check out what its dvc.lock names
	@$(S3_CHECK)
	@$(S3_RETRIES) dvc pull $(DVC_TARGETS) || { echo "make pull: failed; were the outputs of $(DVC_TARGETS)" \
	  "pushed (make push)? $(S3_HINT)" >&2; exit 1; }

pipeline: install ## compile the Kubeflow training pipeline to pipelines/compiled/training.yaml
	tympan pipeline compile --output pipelines/compiled/training.yaml --cluster $${CLUSTER:-pipelines/cluster.yaml}

pipeline-local: install ## run the Kubeflow pipeline here with kfp.local on FSDD (pipelines/tiny.yaml, a two-run grid)
	TYMPAN_DATA_MIRROR=$${TYMPAN_DATA_MIRROR:-../shared/data} tympan pipeline run-local pipelines/tiny.yaml --root runs/pipeline

clean: ## remove runs and derived data (keeps .venv)
	rm -rf runs data/features
