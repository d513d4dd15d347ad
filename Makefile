# Two entry points: `make demo` (the main job on the embedded default) and `make test` (what CI runs).
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU torch first, so deepspeed's unpinned `torch` requirement cannot pull a 5 GB CUDA build.
# On machines without a local CPU wheel add: TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=

export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER ?= 0
export TORCH_EXTENSIONS_DIR ?= $(abspath $(VENV))/torch_extensions
export PYTHONUNBUFFERED := 1

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[dev]"
	touch $@

demo: install
	$(VENV)/bin/hierpt demo

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/model_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache runs
