# `make demo` and `make test` each set up .venv from scratch when needed, then run.
# TORCH_SPEC picks the torch build: the CPU wheel by default; e.g. TORCH_SPEC='torch>=2.3' for CUDA.
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint clean setup

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	rm -rf runs/demo
	$(PY) -m vaekit train --dataset digits --latent-dim 8 --hidden 256 --hidden 128 --epochs 300 \
	    --batch-size 64 --lr 2e-3 --seed 0 --out runs/demo
	$(PY) -m vaekit evaluate runs/demo --k 1000
	$(PY) -m vaekit sample runs/demo --n 64
	$(PY) -m vaekit reconstruct runs/demo --n 32
	$(PY) -m vaekit plot runs/demo
	$(PY) -m vaekit report runs/demo --k 1000
	@echo "demo done: pictures in runs/demo/*.png, the whole run in runs/demo/report.html"

# One worker per core, one thread each (threads beside processes ran 30x slower here); a file's tests stay on one
# worker, so its module fixtures are built once.
test: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n auto --dist loadfile tests

bench: $(STAMP)
	$(PY) benchmarks/throughput.py

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples

clean:
	rm -rf $(VENV) runs .pytest_cache
