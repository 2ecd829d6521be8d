"""Credentials in a tracking URI stay out of everything runner writes or prints (runner/redact.py):
a real `mlflow server` taken with `http://alice:<password>@host:port`, which MLflow's client uses
as basic auth. The run and a two-job sweep must succeed, and the password appears nowhere: not in
stdout/stderr, the run and sweep directories (runner's files and Hydra's .hydra/*, multirun.yaml,
logs), nor the MLflow params, tags or config.yaml artifacts."""
from pathlib import Path

import pytest
from conftest import free_port, read_runs, run_cli

PASSWORD = "hunter2-s3cret"


@pytest.fixture
def server(mlflow_server):
    """conftest's real `mlflow server`: its port."""
    return int(mlflow_server.rsplit(":", 1)[1])


def files_holding(folder: Path, text: str) -> list[str]:
    out = []
    for path in folder.rglob("*"):
        if path.is_file() and text.encode() in path.read_bytes():
            out.append(str(path.relative_to(folder)))
    return out


def test_a_password_in_the_tracking_uri_is_never_written(server, tmp_path):
    uri = f"http://alice:{PASSWORD}@127.0.0.1:{server}"
    work = tmp_path / "work"
    work.mkdir()
    one = run_cli(["model=coin", "guide=manual", "steps=200", f"tracking.uri={uri}", f"hydra.run.dir={work}/run"], cwd=work)
    assert one.returncode == 0, one.stderr[-2000:]
    assert "http://alice:***@127.0.0.1" in one.stdout  # the `mlflow ui` hint, masked
    sweep = run_cli(["-m", "model=coin", "guide=manual", "steps=100", "seed=0,1", f"tracking.uri={uri}",
                     f"hydra.sweep.dir={work}/sweep"], cwd=work)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    for proc in (one, sweep):
        assert PASSWORD not in proc.stdout + proc.stderr
    assert files_holding(work, PASSWORD) == []
    assert (work / "run" / ".hydra" / "overrides.yaml").is_file()  # Hydra's files were there, masked
    client, runs = read_runs(f"http://127.0.0.1:{server}")
    assert len(runs) == 4  # the run, the sweep's parent and its two children
    for run in runs:
        assert PASSWORD not in repr(run.data.params) + repr(run.data.tags), run.data
        if "tracking.uri" in run.data.params:
            assert run.data.params["tracking.uri"] == f"http://alice:***@127.0.0.1:{server}"
    child = next(r for r in runs if "config_hash" in r.data.tags)
    config = Path(client.download_artifacts(child.info.run_id, "config.yaml", str(tmp_path)))
    assert PASSWORD not in config.read_text() and "alice:***@" in config.read_text()


def test_a_refused_password_uri_is_one_masked_line(tmp_path):
    port = free_port()  # nothing listens there
    proc = run_cli(["model=coin", f"tracking.uri=http://alice:{PASSWORD}@127.0.0.1:{port}"], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "is unreachable" in proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr and "alice:***@" in proc.stderr
