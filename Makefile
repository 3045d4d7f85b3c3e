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

# Defaults point at the embedded synthetic sample.
SEED ?= 0
SAMPLE_RAW ?= data/sample/raw
RAW ?= $(SAMPLE_RAW)
OUT ?=
DATASET ?= manifests/sample
CONFIG ?= emo/configs/tiny.yaml
CKPT ?= checkpoints/tiny
RESULTS ?= results/sample
REPORT ?= reports/sample
WORKERS ?= 2
# Generation settings for `make eval` (the tiny sample model needs few DDIM steps; the paper uses 40).
GEN ?= steps=10
MEDIAPIPE_DIR ?= $(firstword $(wildcard ../shared/models/mediapipe) models/mediapipe)
export EMO_MEDIAPIPE_DIR ?= $(abspath $(MEDIAPIPE_DIR))

.PHONY: venv test test-fast dataset sample train eval report demo bench clean help

help:
	@echo "make demo     synthetic sample -> dataset -> tiny model -> evaluation -> report"
	@echo "make test     the test suite (CPU, minutes)"
	@echo "make dataset  [RAW=dir OUT=dir]  raw videos -> clips + manifests"
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

train: venv
	$(PY) -m emo train --config $(CONFIG) --dataset $(DATASET) --out $(CKPT)

eval: venv
	$(PY) -m eval score --dataset $(DATASET) --checkpoint $(CKPT) --out $(RESULTS) $(foreach g,$(GEN),--gen $(g))

report: venv
	$(PY) -m eval report $(wildcard $(RESULTS)/*.json) --out $(REPORT)

demo: venv
	$(PY) -m demo

bench: venv
	$(PY) -m benchmarks.run

clean:
	rm -rf data/sample manifests/sample checkpoints results reports runs
