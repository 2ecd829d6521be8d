# `make run` / `make test` set everything up on a machine with only Python 3.11 and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?= model=gmm guide=autodelta

.PHONY: run test check ui setup bench gallery clean

# Third-party notices no user acts on, each silenced by its exact message and module (a new
# warning still shows; tests/e2e/test_quiet.py): setuptools' "Editable installation" note, which
# pip shows as a BuildBackendWarning for every install of a folder; MLflow 3.17's server importing
# starlette.middleware.wsgi (a StarletteDeprecationWarning, once per uvicorn worker).
INSTALL_WARNINGS := ignore:Editable installation:UserWarning:setuptools.command.editable_wheel
UI_WARNINGS      := ignore:starlette.middleware.wsgi is deprecated:UserWarning:mlflow.server.fastapi_app

setup: $(STAMP)

# Rebuilt only when pyproject.toml changes; otherwise skipped at once.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	PYTHONWARNINGS="$${PYTHONWARNINGS:+$$PYTHONWARNINGS,}$(INSTALL_WARNINGS)" $(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m runner $(ARGS)

# Two workers: the suite is mostly XLA compiles, one per core. PYTHONHASHSEED=0 lets XLA's
# persistent compile cache work across processes (the tests' own per run, RUNNER_JAX_CACHE under
# pytest's temporary folder, never ~/.cache/runner/jax; tests/conftest.py): numpyro's Trace_ELBO sums
# its sites in set order, so with a random string-hash seed every process compiles a loss=trace
# fit into a different program (another cache key). tests/e2e/test_cli.py's determinism test sets
# its own seeds.
PYTEST := PYTHONHASHSEED=0 $(PY) -m pytest -n 2 --dist loadgroup

# Everything (CI: .ci/run): tests/unit and tests/e2e (the CLI, sweeps, servers, browser, install, README).
test: $(STAMP)
	$(PYTEST) --durations=25 tests $(PYTEST_ARGS)

# The unit tier: tests/unit, in-process, under 3 minutes; the tests marked slow (the whole
# combination fit matrix) run in make test only.
check: $(STAMP)
	$(PYTEST) --durations=10 -m "not slow" tests/unit $(PYTEST_ARGS)

PORT ?= 5000
STORE ?= sqlite:///mlflow.db
ui: $(STAMP)
	PYTHONWARNINGS="$${PYTHONWARNINGS:+$$PYTHONWARNINGS,}$(UI_WARNINGS)" $(VENV)/bin/mlflow ui --backend-store-uri $(STORE) --port $(PORT) $(UI_ARGS)

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
