"""The MLflow store from several processes, and the tracking worker process: sixteen concurrent
writers lose nothing; the command's own process never imports mlflow; a dead worker is one clear
error and the next tracker starts a fresh one."""
import multiprocessing as mp
import subprocess
import sys

import pytest
from conftest import ROOT, fit_cli, read_runs


N_WRITERS, N_POINTS = 16, 300


def backend(uri, experiment):
    """The MLflow backend as the CLI builds it: in the tracking worker process."""
    from omegaconf import OmegaConf

    from runner.tracking import from_config

    return from_config(OmegaConf.create({"_target_": "runner.tracking.mlflow.MlflowTracking", "uri": uri,
                                         "experiment": experiment}))


def writer(uri, i, barrier):
    sys.path.insert(0, str(ROOT))
    from runner.tracking.base import RunRecord, RunStart

    tracker = backend(uri, "many")
    tracker.run_started(RunStart(name=f"writer {i}", tags={"writer": i}, config_hash=str(i)))
    barrier.wait()
    tracker.run_completed(RunRecord(name=f"writer {i}", tags={"writer": i}, params={f"p{k}": k * i for k in range(50)},
                                    scalars={"final_loss": float(i)},
                                    curves={"loss": [float(i + s) for s in range(N_POINTS)]},
                                    artifact_dir=ROOT, artifacts=[]))


def test_sixteen_writers_lose_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(N_WRITERS)
    procs = [ctx.Process(target=writer, args=(uri, i, barrier)) for i in range(N_WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0] * N_WRITERS
    client, runs = read_runs(uri, "many")
    assert len(runs) == N_WRITERS and all(r.info.status == "FINISHED" for r in runs)
    for r in runs:
        i = int(r.data.tags["writer"])
        assert len(r.data.params) == 50 and r.data.params["p3"] == str(3 * i)
        assert r.data.metrics["final_loss"] == i
        hist = client.get_metric_history(r.info.run_id, "loss")
        assert sorted(p.value for p in hist) == [float(i + s) for s in range(N_POINTS)]


# --- the tracking worker process -------------------------------------------------------------------

def test_the_command_process_never_imports_mlflow(tmp_path):
    """MLflow's import, store set-up and logging run in the tracking worker; the command's own
    process (which traces and plots) does not import it, yet its run is tagged with its pid."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    script = (f"import os, sys; sys.path.insert(0, {str(ROOT)!r})\n"
              "import runner\n"
              f"out = runner.run(['model=coin', 'steps=20', 'restarts=2', 'progress=false', 'tracking.uri={uri}'], "
              f"run_dir={str(tmp_path / 'run')!r})\n"
              "print('RESULT', out.run_id, os.getpid(), sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    run_id, pid, modules = proc.stdout.split("RESULT ")[1].split(" ", 2)
    assert modules.strip() == "[]"
    (run,) = read_runs(uri)[1]
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert run.data.tags["runner.pid"] == pid and run.data.metrics["final_loss"] > 0


def test_a_new_worker_adopts_the_commands_open_run_never_its_sweeps_parent(tmp_path, tracking_uri):
    """A worker that takes over (MlflowTracking.adopt, in the new worker) goes on with the run this
    command left RUNNING; the sweep's parent, RUNNING under the same pid while its jobs run, is
    not a job's run: with no job's run open it adopts none (a job's record would go into the parent)."""
    from runner.tracking.base import RunRecord, RunStart, SweepStart
    from runner.tracking.mlflow import MlflowTracking

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sweep = MlflowTracking(uri, "adopt")
    parent, _ = sweep.sweep_started(SweepStart(name="sweep", sweep_hash="s", tags={}, description="", reuse=False))
    job = MlflowTracking(uri, "adopt")
    job.run_started(RunStart(name="job 1", tags={}, config_hash="h1", parent_id=parent))
    opened = job.run_id
    assert MlflowTracking(uri, "adopt").adopt() == opened
    job.run_completed(RunRecord(name="job 1", tags={}, params={}, scalars={"final_loss": 1.0}, curves={},
                                artifact_dir=tmp_path, artifacts=[], parent_id=parent))
    assert MlflowTracking(uri, "adopt").adopt() is None  # only the parent is RUNNING


def test_a_dead_tracking_worker_is_replaced_once_then_one_clear_error(tmp_path):
    """A worker that dies is replaced by a new one, which answers the same call; a second death
    of the same tracker's worker is one clear error (no endless restarts)."""
    from runner.tracking import TrackingError
    from runner.tracking.worker import client

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = backend(uri, "gone")
    tracker.connect()
    assert tracker.finished_run("x") is None
    client().proc.kill()
    assert tracker.finished_run("x") is None  # through a new worker
    first = tracker.experiment_id
    client().proc.kill()
    with pytest.raises(TrackingError, match=r"^the tracking worker process exited \(code -9\); nothing more "
                                            rf"could be logged to {uri}$"):
        tracker.finished_run("x")
    again = backend(uri, "gone")  # the next backend starts a fresh worker
    assert again.finished_run("x") is None and again.experiment_id == first


def test_a_model_that_cannot_be_logged_leaves_the_rest_of_the_run_logged(tmp_path, tracking_uri, monkeypatch):
    """Logging the pyfunc model fails (its store, its files): the run still has its params, metrics
    and files, holds no model, and ends FAILED with the model's error raised, as when the model was
    logged last; no MLflow run is left active in the process."""
    import mlflow
    import numpy as np

    from runner.tracking.base import RunRecord, RunStart
    from runner.tracking.mlflow import MlflowTracking, pyfunc

    def broken(run_id, **kwargs):
        raise OSError("no room for the model")

    monkeypatch.setattr(pyfunc, "log_model", broken)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    (tmp_path / "metrics.json").write_text("{}")
    tracker = MlflowTracking(uri, "model")
    tracker.run_started(RunStart(name="r", tags={}, config_hash="h"))
    run_id = tracker.run_id
    with pytest.raises(OSError, match="no room for the model"):
        tracker.run_completed(RunRecord(name="r", tags={}, params={"a": 1}, scalars={"final_loss": 1.5},
                                        curves={"loss": [3.0, 2.0, 1.5]}, artifact_dir=tmp_path,
                                        artifacts=["metrics.json"],
                                        model={"files": {}, "method": "svi", "data": np.zeros(3)}))
    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and run.data.params == {"a": "1"}
    assert run.data.metrics == {"final_loss": 1.5, "loss": 1.5}
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [3.0, 2.0, 1.5]
    assert [a.path for a in client.list_artifacts(run_id)] == ["metrics.json"]
    assert mlflow.active_run() is None and client.search_logged_models([run.info.experiment_id]) == []


def test_the_pyfunc_model_is_logged_only_into_the_run_model_run_opened():
    import numpy as np

    from runner.tracking.mlflow import pyfunc

    with pytest.raises(RuntimeError, match="outside model_run"):
        pyfunc.log_model("0123", files={}, method="svi", data=np.zeros(3))


@pytest.mark.parametrize("steps,points", [(95, 10), (300, None)])
def test_the_store_has_the_curves_points_that_metrics_json_has(tmp_path, steps, points):
    """A curve the fit kept at tracking.max_points_per_curve points (its last step too) is logged
    point for point: it was strided again (95 steps at 10 points: 11 kept, 6 logged; 4000 steps at
    2000: 2001 kept, 1001 logged). Every step of a curve that was not cut."""
    import json

    cap = [f"tracking.max_points_per_curve={points}"] if points else []
    _, client, run, run_dir = fit_cli(tmp_path, "model=coin", "guide=autonormal", f"steps={steps}", *cap)
    saved = json.loads((run_dir / "metrics.json").read_text())
    kept = saved.get("steps", list(range(steps)))
    assert len(kept) == (11 if points else steps) and kept[-1] == steps - 1
    for name, values in saved["curves"].items():
        history = sorted(client.get_metric_history(run.info.run_id, name), key=lambda m: m.step)
        assert [m.step for m in history] == kept, name
        assert [m.value for m in history] == pytest.approx(values, rel=1e-6), name
