"""No third-party warning reaches a user's terminal in normal use (issue 29). One test per source,
each running the command as a user does and reading its stderr:

- ArviZ's FutureWarning about its refactor, printed by its import once a day (a stamp file in
  ArviZ's cache folder: a fresh XDG_CACHE_HOME is ArviZ's first import of the day): filtered where
  runner imports it (runner.inference_data.import_arviz: a sweep's LOO ranking);
- MLflow 3.17's server importing starlette.middleware.wsgi (StarletteDeprecationWarning, once per
  uvicorn worker) under `make ui`: the Makefile's UI_WARNINGS;
- setuptools' "Editable installation" note, which pip 26 shows as a BuildBackendWarning on every
  `pip install -e .` of `make run`'s set-up: the Makefile's INSTALL_WARNINGS.

Each filter names its warning's message and module, so any other warning still shows.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, free_port, wait_http


def warning_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "Warning" in line]


def makefile_value(name: str) -> str:
    match = re.search(rf"^{name}\s*:=\s*(.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert match, f"no {name} in the Makefile"
    return match.group(1).strip()


def test_a_first_sweep_of_the_day_prints_no_arviz_warning(tmp_path):
    """A sweep's summary ranks its jobs by PSIS-LOO with ArviZ (loo.json): its first import of the
    day. (A single run writes its inference_data.nc without ArviZ: runner.inference_data.write_netcdf.)"""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}  # ArviZ's daily stamp: not there yet
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run([sys.executable, "-m", "runner", "-m", "model=coin", "steps=50", "seed=0,1", "tracking=none",
                           f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "sweep" / "0" / "inference_data.nc").is_file()
    assert (tmp_path / "cache" / "arviz" / "daily_warning").is_file()  # ArviZ was imported, and would have warned today
    assert warning_lines(proc.stderr) == []


def test_make_ui_prints_no_starlette_warning(tmp_path):
    # the project's Makefile in a folder of its own (the store it opens: ./mlflow.db), its set-up
    # up to date (STAMP newer than pyproject.toml), the project's venv
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "stamp").touch()
    port = free_port()
    proc = subprocess.Popen(["make", "-s", "ui", f"VENV={Path(sys.executable).parent.parent}", "STAMP=stamp",
                             f"PORT={port}", "UI_ARGS=--host 127.0.0.1 --workers 2"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=180)
        wait_http(f"http://127.0.0.1:{port}/", proc)  # a worker that serves the UI has imported the server
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # make, mlflow and its workers: the group this test started
        _, stderr = proc.communicate(timeout=60)
    assert "Uvicorn running on" in stderr or "Listening at" in stderr, stderr[-3000:]
    assert warning_lines(stderr) == [], stderr[-3000:]


def test_the_editable_install_of_make_run_prints_no_build_backend_warning(tmp_path):
    """The set-up's `pip install -e` (no dependencies here: the build is what warns) of a copy of
    the project into a new venv, with the project venv's pip (26: it shows a build backend's
    warnings for a local folder) and the Makefile's PYTHONWARNINGS."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    for name in ("runner", "hydra_plugins"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PYTHONWARNINGS"] = makefile_value("INSTALL_WARNINGS")
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                           "--quiet", "--no-deps", "-e", str(project)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert warning_lines(proc.stdout + proc.stderr) == [], proc.stderr[-3000:]
