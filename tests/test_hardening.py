"""Issue 6: bad input, numerical failure, interruption, stale runs, concurrent writers and
determinism, each against real subprocesses and real sqlite stores."""
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, read_runs, run_cli

from runner.tracking import store_lock

pytestmark = pytest.mark.slow


def no_runs_left(tmp_path):
    """Nothing logged and nothing started: no run at all in the store, no fit in the run dir."""
    db = tmp_path / "mlflow.db"
    if db.exists():
        _, runs = read_runs(f"sqlite:///{db}")
        assert runs == []
    assert not list(tmp_path.glob("**/metrics.json"))


def files(tmp_path):
    (tmp_path / "nan.csv").write_text("1\nnan\n3\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "flat.csv").write_text("0\n1\n1\n")
    (tmp_path / "afile").write_text("x")


BAD = [  # (overrides, the one line expected on stderr after "runner: error: ")
    (["model=gmx"], "unknown model 'gmx': choose one of bmm, coin, fn, gaussian2d, gmm, multimodal"),
    (["guide=nope"], "unknown guide 'nope': choose one of autodelta, autoiaf, autolaplace, autolowrank, automvn, "
                     "autonormal, manual, mixture"),
    (["optim=nope"], "unknown optim 'nope': choose one of adam, adam_cosine, adamw, lbfgs, sgd"),
    (["stepz=10"], "unknown key 'stepz'"),
    (["steps=abc"], "steps must be a positive integer, got 'abc'"),
    (["steps=0"], "steps must be a positive integer, got 0"),
    (["steps=-3"], "steps must be a positive integer, got -3"),
    (["restarts=0"], "restarts must be a positive integer, got 0"),
    (["optim.lr=-0.1"], "optim.lr must be positive, got -0.1"),
    (["loss.num_particles=0"], "loss.num_particles must be >= 1"),
    (["model=bmm", "guide=manual"], "model 'bmm' has no manual guide"),
    (["model=coin", "guide=autodelta", "+guide.init_loc_fn=x"], "cannot build guide"),
    (["model=gmm", "loss=trace"], "model 'gmm' has enumerated discrete sites: use loss=traceenum"),
    (["data=file", "data.path={tmp}/missing.csv"], "data file not found: {tmp}/missing.csv"),
    (["data=file", "data.path={tmp}/nan.csv"], "data {tmp}/nan.csv contains NaN or inf"),
    (["data=file", "data.path={tmp}/empty.csv"], "data {tmp}/empty.csv is empty"),
    (["model=bmm", "data=file", "data.path={tmp}/flat.csv"], "model 'bmm' needs data of shape (N, D), got (3,)"),
    (["model.K=10"], "model.K=10 is larger than the number of data points (5)"),
    (["model=bmm", "data=digits"], "model 'bmm' needs binary data: set data.binarize=<threshold>"),
    # the user's own command is their code, as in Hydra: the target is used (here called with the
    # model's keys); configs read back from a store are held to runner.trust (tests/test_trust.py)
    (["model._target_=os.system"], "cannot build model: TypeError: system() takes at most 1 keyword argument"),
    (["model._target_=null"], "model._target_ must be a dotted path such as mymodels.MyModel, got None"),
    (["inference=em", "model=coin"], "inference=em has no updates for model 'coin'"),
    (["tracking.uri=sqlite:///{tmp}/afile/mlflow.db"], "cannot create the tracking store sqlite:///{tmp}/afile/mlflow.db"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    files(tmp_path)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    message = message.replace("{tmp}", str(tmp_path))
    uri = [] if any(a.startswith("tracking.uri") for a in args) else [f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"]
    proc = run_cli([*args, *uri, f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"runner: error: {message}"), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    no_runs_left(tmp_path)


def test_unreachable_tracking_server_fails_fast(tmp_path):
    t0 = time.time()
    proc = run_cli(["model=coin", "tracking.uri=http://127.0.0.1:9"], cwd=tmp_path)
    assert time.time() - t0 < 15
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "runner: error: tracking server http://127.0.0.1:9 is unreachable ([Errno 111] Connection refused): "
        "start it (mlflow server ...) or set tracking.uri"]


def test_deleted_experiment_is_refused(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    client.delete_experiment(client.create_experiment("gone"))
    proc = run_cli(["model=coin", "steps=10", f"tracking.uri={uri}", "tracking.experiment=gone"], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("runner: error: experiment 'gone' is deleted")
    assert "the fit is saved in" in proc.stderr


# --- numerical failure -----------------------------------------------------------------------------

def test_diverged_restarts_are_dropped_and_counted(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_cli(["model=gmm", "optim.lr=30", "select=final", "restarts=20", "steps=100", f"tracking.uri={uri}"],
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = read_runs(uri)[1][0]
    m = run.data.metrics
    assert run.info.status == "FINISHED"
    assert 1 <= m["restarts_failed"] < 20 and np.isfinite(m["final_loss"])


def test_all_restarts_diverged_is_a_failed_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_cli(["model=gmm", "optim.lr=1e6", "steps=50", f"tracking.uri={uri}"], cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "runner: error: all trained restarts diverged (1 of 100 trained; loss NaN/inf from step 1): lower optim.lr")
    client, runs = read_runs(uri)
    (run,) = runs
    assert run.info.status == "FAILED" and run.data.tags["failure_step"] == "1"
    m = run.data.metrics
    # select=initial trains the best-scored restart only: it is the one that failed
    assert m["restarts_failed"] == 1 and np.isfinite(m["initial_loss"]) and "final_loss" not in m
    loss = sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda p: p.step)
    assert len(loss) == 50 and np.isfinite(loss[0].value) and not np.isfinite(loss[1].value)


# --- interruption and stale runs -------------------------------------------------------------------

def start_long_fit(tmp_path, uri, new_session=False):
    proc = subprocess.Popen([sys.executable, "-m", "runner", "model=gmm", "steps=2000000", f"tracking.uri={uri}"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=new_session)
    deadline = time.time() + 120
    while time.time() < deadline:  # the run is created (RUNNING) while the fit compiles
        time.sleep(0.5)
        if (tmp_path / "mlflow.db").exists():
            try:  # under the store's lock: a reader must not migrate a store being created
                with store_lock(uri):
                    runs = read_runs(uri)[1]
            except Exception:
                continue
            if runs and runs[0].info.status == "RUNNING":
                return proc, runs[0]
    proc.kill()
    raise AssertionError("no RUNNING run appeared")


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_run_ends_killed(tmp_path, sig, code):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc, run = start_long_fit(tmp_path, uri)
    assert run.data.tags["runner.pid"] == str(proc.pid)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == code, err
    (after,) = read_runs(uri)[1]
    assert after.info.status == "KILLED"
    assert after.data.params["steps"] == "2000000"  # what there was (the config) is logged


def group_gone(pgid, within=30.0) -> bool:
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def test_ctrl_c_to_the_whole_process_group_ends_the_run_killed(tmp_path):
    """A terminal's Ctrl-C reaches every process of the command, the tracking worker too: the
    worker outlives it, ends the run KILLED for the command, then exits (nothing left behind)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc, run = start_long_fit(tmp_path, uri, new_session=True)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "runner: interrupted"
    (after,) = read_runs(uri)[1]
    assert after.info.run_id == run.info.run_id and after.info.status == "KILLED"
    assert after.data.params["steps"] == "2000000"
    assert group_gone(proc.pid), "a process of the command outlived it"


def test_run_left_running_by_sigkill_is_marked_failed_by_the_next_command(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc, run = start_long_fit(tmp_path, uri)
    proc.kill()
    proc.wait()
    assert read_runs(uri)[1][0].info.status == "RUNNING"
    nxt = run_cli(["model=coin", "steps=10", f"tracking.uri={uri}"], cwd=tmp_path)
    assert nxt.returncode == 0, nxt.stderr
    assert f"marked run {run.info.run_id} FAILED" in nxt.stdout
    status = {r.info.run_id: r.info.status for r in read_runs(uri)[1]}
    assert status[run.info.run_id] == "FAILED" and sorted(status.values()) == ["FAILED", "FINISHED"]


def test_sweep_goes_on_when_a_job_fails(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_cli(["-m", "model=bmm,coin", "guide=manual", "steps=10", f"tracking.uri={uri}",
                    f"hydra.sweep.dir={tmp_path}/multirun"], cwd=tmp_path)
    assert proc.returncode == 1
    assert "2 jobs, 1 run, 0 skipped, 1 failed" in proc.stdout
    runs = read_runs(uri)[1]
    parent = [r for r in runs if r.data.tags.get("runner.role") == "sweep"][0]
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_failed"] == 1
    assert [r.info.status for r in runs if r.data.tags.get("mlflow.parentRunId")] == ["FINISHED"]


# --- store safety and determinism -----------------------------------------------------------------

N_WRITERS, N_POINTS = 16, 300


def writer(uri, i, barrier):
    sys.path.insert(0, str(ROOT))
    from runner.tracking import Tracker

    tracker = Tracker(uri, "many").start(open_run={"writer": i})
    tracker.wait()
    barrier.wait()
    tracker.log_run(tags={"writer": i}, params={f"p{k}": k * i for k in range(50)},
                    scalars={"final_loss": float(i)}, curves={"loss": [float(i + s) for s in range(N_POINTS)]},
                    artifact_dir=ROOT, artifacts=[], into_open_run=True)


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
              "from runner.api import compose\nfrom runner.app import execute\n"
              f"cfg, choices = compose(['model=coin', 'steps=20', 'restarts=2', 'progress=false', 'tracking.uri={uri}'])\n"
              f"out = execute(cfg, choices, __import__('pathlib').Path({str(tmp_path / 'run')!r}))\n"
              "print('RESULT', out.run_id, os.getpid(), sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    run_id, pid, modules = proc.stdout.split("RESULT ")[1].split(" ", 2)
    assert modules.strip() == "[]"
    (run,) = read_runs(uri)[1]
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert run.data.tags["runner.pid"] == pid and run.data.metrics["final_loss"] > 0


def test_a_dead_tracking_worker_is_one_clear_error(tmp_path):
    from runner.tracking import Tracker, TrackingError
    from runner.tracking.worker import client

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, "gone").start()
    tracker.wait()
    client().proc.kill()
    with pytest.raises(TrackingError, match=r"^the tracking worker process exited \(code -9\); nothing more "
                                            rf"could be logged to {uri}$"):
        tracker.find_finished("x")
    again = Tracker(uri, "gone").start()  # the next tracker starts a fresh worker
    again.wait()
    assert again.find_finished("x") is None and again.experiment_id == tracker.experiment_id


class TwoArgError(Exception):
    def __init__(self, what, where):
        super().__init__(f"{what} at {where}")


def test_every_worker_reply_loads_in_the_command():
    """An answer the command could not unpickle would stop its receiver and hang the command:
    such an exception comes back as a RuntimeError naming it; a plain one comes back as itself."""
    import pickle

    from runner.tracking import TrackingError
    from runner.tracking.worker import _reply

    state = {"run_id": "r", "experiment_id": "1", "reaped": []}
    req, ok, err, back = pickle.loads(_reply(7, False, TwoArgError("bad", "store"), state))
    assert (req, ok, back) == (7, False, state)
    assert type(err) is RuntimeError and str(err) == "TwoArgError: bad at store"
    _, ok, err, _ = pickle.loads(_reply(8, False, TrackingError("one line"), state))
    assert not ok and type(err) is TrackingError and str(err) == "one line"
    assert pickle.loads(_reply(9, True, ("run", True), state)) == (9, True, ("run", True), state)
    _, ok, err, _ = pickle.loads(_reply(10, True, [TwoArgError("odd", "value")], state))  # a value too
    assert not ok and type(err) is RuntimeError and str(err).startswith("TypeError: ")


def test_same_config_and_seed_are_bit_identical(tmp_path):
    outs = []
    for k in range(2):
        d = tmp_path / f"r{k}"
        proc = run_cli(["model=coin", "guide=autonormal", "steps=200", "restarts=4", "select=final", "seed=3",
                        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"hydra.run.dir={d}"], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        outs.append(((d / "params.json").read_text(), json.loads((d / "metrics.json").read_text())))
    assert outs[0][0] == outs[1][0]
    assert outs[0][1]["curves"] == outs[1][1]["curves"] and outs[0][1]["scalars"] == outs[1][1]["scalars"]
