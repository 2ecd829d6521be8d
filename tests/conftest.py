import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(tmp_path):
    """A fresh sqlite MLflow store URI in a temp dir."""
    return f"sqlite:///{tmp_path}/mlflow.db"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc, timeout=90):
    """Until `url` answers 200; fails at once if the server process `proc` exits (with its
    stderr when that is piped)."""
    import time
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read()[-2000:] if proc.stderr else ""
            raise RuntimeError(f"server exited with {proc.returncode}: {err}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


def run_cli(args, cwd, timeout=600, env=None):
    """`python -m runner ARGS` in a subprocess, as a user runs it."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def fit_cli(folder, *args, run="run"):
    """`python -m runner ARGS` in `folder` into its own sqlite store and run directory `run`; it
    must exit 0 and leave its newest run FINISHED. (proc, client, that run, the run directory)."""
    uri = f"sqlite:///{folder}/mlflow.db"
    proc = run_cli([*args, f"tracking.uri={uri}", f"hydra.run.dir={folder}/{run}"], cwd=folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, runs = read_runs(uri)
    latest = max(runs, key=lambda r: r.info.start_time)
    assert latest.info.status == "FINISHED"
    return proc, client, latest, Path(folder) / run


def read_runs(uri, experiment="runner"):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return client, []
    return client, client.search_runs([exp.experiment_id])


def run_cli_tty(args, cwd, timeout=600):
    """`python -m runner ARGS` with stderr on a pseudo-terminal, as in an interactive shell.
    Returns (returncode, stdout, what the terminal received)."""
    import pty
    import select

    env = {**os.environ}
    env.pop("HYDRA_FULL_ERROR", None)
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.2)
        chunk = b""
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                pass
            seen += chunk
        if not chunk and proc.poll() is not None:
            break
    os.close(master)
    out = proc.stdout.read().decode()
    proc.wait(timeout=timeout)
    return proc.returncode, out, seen.decode(errors="replace")
