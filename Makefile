# Every target sets up .venv first, so each of them works on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch==2.13.0 from the configured index (here, the CPU wheel; PyPI's Linux default is the CUDA
# build: pass TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" for CPU).
# Mac (MPS) or CUDA users: install your own torch into $(VENV) first; an existing torch is kept.
TORCH ?= torch==2.13.0
JOB ?= config/jobs/demo.yaml

.PHONY: venv demo test lint bench faults clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --disable-pip-version-check -q "$(TORCH)"
	$(BIN)/pip install --disable-pip-version-check -q -e ".[test]"
	touch $@

# A daemon on the bundled data: drop the sample job, draw it training live, exit when done.
demo: venv
	$(BIN)/ktrdr-daemon submit $(JOB)
	$(BIN)/ktrdr-daemon run --once --daemon-id demo
	$(BIN)/ktrdr-daemon models

# Two workers (pytest-xdist): most tests wait on real daemons and subprocesses. loadscope keeps
# each module on one worker, in file order, so a module's daemon or trained model is built once.
test: venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2 --dist loadscope

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: venv
	$(BIN)/python -m bench

# The long fault runs of docs/reliability.md (hours on a small machine; tests/test_faults.py
# runs a few trials of each in make test).
faults: venv
	$(BIN)/python -m tests.faults.harness --kind all --trials 200
	$(BIN)/python -m tests.faults.fuzz --drops 5000
	$(BIN)/python -m tests.faults.disk --rounds 30

clean:
	rm -rf $(VENV) build *.egg-info
