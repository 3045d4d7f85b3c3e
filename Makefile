# Every target sets up its own virtual environment first (.venv), so each works on a fresh clone.
# CONSTRAINTS pins torch (2.13.0: the CPU wheel on the CPU machines, a CUDA build from PyPI elsewhere);
# pass CONSTRAINTS=your-file.txt to bring your own torch build.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints/cpu.txt
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export PYANNOTE_METRICS_ENABLED ?= 0
export GRADIO_ANALYTICS_ENABLED ?= False

# Defaults point at the embedded synthetic sample. With them, each target first builds what it
# needs and is missing (report <- eval <- train <- dataset); given your own DATASET, CKPT or
# RESULTS, a missing input is an error that says which command makes it.
SEED ?= 0
SAMPLE_RAW ?= data/sample/raw
SAMPLE_DATASET := manifests/sample
SAMPLE_CKPT := checkpoints/tiny
SAMPLE_RESULTS := results/sample
RAW ?= $(SAMPLE_RAW)
OUT ?=
DATASET ?= $(SAMPLE_DATASET)
CONFIG ?= emo/configs/tiny.yaml
CKPT ?= $(SAMPLE_CKPT)
RESULTS ?= $(SAMPLE_RESULTS)
REPORT ?= reports/sample
WORKERS ?= 2
# Generation settings for `make eval` (the tiny sample model needs few DDIM steps; the paper uses 40).
GEN ?= steps=10
MEDIAPIPE_DIR ?= $(firstword $(wildcard ../shared/models/mediapipe) models/mediapipe)
export EMO_MEDIAPIPE_DIR ?= $(abspath $(MEDIAPIPE_DIR))

.PHONY: venv test test-fast dataset dataset-report sample train eval report demo bench clean help

help:
	@echo "make demo     synthetic sample -> dataset -> tiny model -> evaluation -> report"
	@echo "make test     the test suite (CPU, minutes)"
	@echo "make dataset  [RAW=dir OUT=dir]  raw videos -> clips + manifests"
	@echo "make dataset-report [DATASET=dir]  the dataset viewer page, DATASET/report.html"
	@echo "make train    [CONFIG=... DATASET=... CKPT=...]"
	@echo "make eval     [DATASET=... CKPT=... RESULTS=...]"
	@echo "make report   [RESULTS=... REPORT=...]"
	@echo "make bench    benchmarks, results written under benchmarks/"

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[dev,ray]"
	touch $@

test: venv
	$(PY) -m pytest

test-fast: venv
	$(PY) -m pytest -m "not slow"

sample: venv
	$(PY) -m dataprep synth --out $(SAMPLE_RAW) --seed $(SEED)

dataset: venv
	@if [ "$(RAW)" = "$(SAMPLE_RAW)" ]; then $(PY) -m dataprep synth --out $(SAMPLE_RAW) --seed $(SEED); fi
	$(PY) -m dataprep run --raw $(RAW) --out $(if $(OUT),$(OUT),$(DATASET)) --workers $(WORKERS)

dataset-report: venv $(DATASET)/manifest.parquet
	$(PY) -m dataprep inspect $(DATASET) --html

# `emo train` continues a run folder that holds an unfinished run and says so when it is complete.
train: venv $(DATASET)/manifest.parquet
	$(PY) -m emo train --config $(CONFIG) --dataset $(DATASET) --out $(CKPT)

eval: venv $(CKPT)/latest
	$(PY) -m eval score --dataset $(DATASET) --checkpoint $(CKPT) --out $(RESULTS) $(foreach g,$(GEN),--gen $(g))

report: venv $(RESULTS)/baseline_ground_truth.json
	$(PY) -m eval report $$(ls $(RESULTS)/*.json) --out $(REPORT)

# The products the chain builds when missing (order-only: an existing product is never rebuilt
# because an input is newer; run the target itself to continue or redo it).
ifeq ($(DATASET),$(SAMPLE_DATASET))
$(DATASET)/manifest.parquet: | venv
	$(PY) -m dataprep synth --out $(SAMPLE_RAW) --seed $(SEED)
	$(PY) -m dataprep run --raw $(SAMPLE_RAW) --out $(DATASET) --workers $(WORKERS)
else
$(DATASET)/manifest.parquet:
	@echo "error: no manifest at $@; build it with: make dataset RAW=<your videos> OUT=$(DATASET)" >&2; exit 1
endif

ifeq ($(CKPT),$(SAMPLE_CKPT))
$(CKPT)/latest: | venv $(DATASET)/manifest.parquet
	$(PY) -m emo train --config $(CONFIG) --dataset $(DATASET) --out $(CKPT)
else
$(CKPT)/latest:
	@echo "error: no checkpoint at $(CKPT); train one with: make train DATASET=$(DATASET) CKPT=$(CKPT)" >&2; exit 1
endif

ifeq ($(RESULTS),$(SAMPLE_RESULTS))
$(RESULTS)/baseline_ground_truth.json: | venv $(CKPT)/latest
	$(PY) -m eval score --dataset $(DATASET) --checkpoint $(CKPT) --out $(RESULTS) $(foreach g,$(GEN),--gen $(g))
else
$(RESULTS)/baseline_ground_truth.json:
	@echo "error: no results in $(RESULTS); score with: make eval DATASET=$(DATASET) CKPT=$(CKPT) RESULTS=$(RESULTS)" >&2; exit 1
endif

demo: venv
	$(PY) -m demo

bench: venv
	$(PY) -m benchmarks.run

clean:
	rm -rf data/sample manifests/sample checkpoints results reports runs
