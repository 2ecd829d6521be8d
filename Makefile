# `make run` / `make test` set everything up on a machine with only Python 3.11 and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?= model=gmm guide=autodelta

.PHONY: run test check ui setup bench gallery clean

setup: $(STAMP)

# Rebuilt only when pyproject.toml changes; otherwise skipped at once.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m runner $(ARGS)

# Two workers: the suite is mostly XLA compiles, one per core.
test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup --durations=25 tests $(PYTEST_ARGS)

# The fast tier: in-process tests not marked slow (seconds); make test runs everything.
check: $(STAMP)
	$(PY) -m pytest -n 2 -m "not slow" tests $(PYTEST_ARGS)

ui: $(STAMP)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db

bench: $(STAMP)
	$(PY) benchmarks/gmm_tutorial.py
	$(PY) benchmarks/sweeps.py
	$(PY) benchmarks/em_digits.py
	$(PY) benchmarks/progress_overhead.py

# The README's figures (docs/gallery/*.png) from real runs
gallery: $(STAMP)
	$(PY) -m runner.gallery docs/gallery

clean:
	rm -rf $(VENV) outputs multirun mlflow.db mlruns
