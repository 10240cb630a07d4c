# One command for each thing a developer repeats. Every target sets up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
# The pair that lies on this project's machines' disk; override elsewhere (e.g. TORCH_SPEC=torch).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup test test-fast demo bench lint models gpu-check clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --no-cache-dir $(TORCH_SPEC)
	$(PY) -m pip install -q --no-cache-dir -e '.[dev]'
	touch $@

test: setup
	$(PY) -m pytest -q --durations=10 tests

# everything but the tests marked slow (full-size models, training runs): a quick check while working
test-fast: setup
	$(PY) -m pytest -q -m 'not slow' tests

demo: setup
	$(VENV)/bin/timm-alexnet-split demo

bench: setup
	$(VENV)/bin/timm-alexnet-split bench

# On a GPU machine whose python3 already has torch, timm, onnx, onnxruntime and pytest (no venv): GPU tests + bench.
gpu-check:
	bash scripts/gpu_check.sh

lint: setup
	$(VENV)/bin/ruff check timm_alexnet_split timm_alexnet_split_cli.py tests

models: setup
	$(VENV)/bin/timm-alexnet-split models

clean:
	rm -rf $(VENV) .pytest_cache
