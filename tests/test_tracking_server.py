"""Tracking beyond the embedded store: a real `mlflow server` on loopback, and PostgreSQL."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import read_runs, run_cli

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    exe = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen(
        [str(exe), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
         "--artifacts-destination", str(tmp_path / "artifacts")],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_sweep_against_a_real_mlflow_server(mlflow_server, tmp_path):
    proc = run_cli(["-m", "model=coin", "guide=manual", "seed=0,1", "steps=200",
                    f"tracking.uri={mlflow_server}", "tracking.experiment=server",
                    f"hydra.sweep.dir={tmp_path}/multirun"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, runs = read_runs(mlflow_server, "server")
    parents = [r for r in runs if r.data.tags.get("runner.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == 2
    assert all(r.info.status == "FINISHED" for r in runs)
    run_id = children[0].info.run_id
    assert "params.json" in {a.path for a in client.list_artifacts(run_id)}  # through the server
    assert len(client.get_metric_history(run_id, "loss")) == 200


def postgres_available():
    return shutil.which("initdb") and shutil.which("pg_ctl") and (
        os.geteuid() != 0 or shutil.which("runuser"))


@pytest.mark.skipif(not postgres_available(), reason="PostgreSQL's initdb / pg_ctl are not on this machine")
def test_run_against_postgresql(tmp_path):
    import pwd

    d = Path(tempfile.mkdtemp(prefix="runner-pg-"))
    as_pg = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user for initdb")
        os.chown(d, pw.pw_uid, pw.pw_gid)
        d.chmod(0o755)
        as_pg = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = d / "data"
    try:
        subprocess.run([*as_pg, "initdb", "-D", str(data), "-A", "trust", "-U", "runner"],
                       check=True, capture_output=True)
        subprocess.run([*as_pg, "pg_ctl", "-D", str(data), "-l", str(d / "log"), "-w", "start", "-o",
                        f"-p {port} -k {d} -c listen_addresses=127.0.0.1"], check=True, capture_output=True)
        subprocess.run(["createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "runner", "mlflow"],
                       check=True, capture_output=True)
        uri = f"postgresql+psycopg2://runner@127.0.0.1:{port}/mlflow"
        proc = run_cli(["model=coin", "guide=manual", "steps=100", f"tracking.uri={uri}",
                        f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        _, runs = read_runs(uri)
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        assert runs[0].data.metrics["final_loss"] > 0
    finally:
        subprocess.run([*as_pg, "pg_ctl", "-D", str(data), "-w", "stop", "-m", "fast"], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)
