# The two commands a newcomer runs:  make demo  and  make test.
# Each creates .venv and installs the project on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO_DATA := outputs/data/synthetic-96px

.PHONY: setup demo test test-slow test-all bench gpu-check clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the project with its test tools

demo: $(STAMP)  ## generate the built-in data set and train on it, on the CPU, in a few minutes
	$(PY) -m catdog.data.synthetic --out $(DEMO_DATA) --n-per-class 1000 --size 96 --seed 0
	$(PY) src/train.py experiment=demo

test: $(STAMP)  ## the test suite without its slow end-to-end tests (under 5 minutes on 2 CPU cores)
	$(PY) -m pytest -m "not slow and not gpu"

test-slow: $(STAMP)  ## the slow end-to-end tests alone (resume, DDP, sweeps, bench scripts); CI runs them after make test
	$(PY) -m pytest -m "slow and not gpu"

test-all: $(STAMP)  ## every test, the slow ones and those needing a GPU (skipped without one) included
	$(PY) -m pytest

bench: $(STAMP)  ## throughput benchmark: original pipeline vs ours vs the bare compute ceiling
	$(PY) bench/throughput.py

gpu-check: $(STAMP)  ## the H100 targets of bench/RESULTS.md (needs a CUDA GPU; under 5 minutes)
	PYTHON=$(PY) bash bench/gpu_check.sh

clean:
	rm -rf $(VENV) outputs/runs outputs/sweeps outputs/cache
