# Quick start:  make demo   (main job, headless, on the embedded default)
#               make test   (every test, every notebook executed)
# Both create or reuse .venv. PYTHON must be ≥ 3.10.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test figures lab bench clean-venv

# torch is pinned by constraints-cpu.txt to the CPU build: a bare `torch` would pull CUDA wheels.
$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -c constraints-cpu.txt -e '.[whisper,dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/workbench demo

figures: $(STAMP)
	$(BIN)/workbench figures

# Lint first (seconds): ruff, then the layer contract of pyproject.toml; then every test.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n 2 -q

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir notebooks --allow-root

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
