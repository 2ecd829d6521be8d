"""Interruption and stale runs, with real processes and signals: SIGINT (Ctrl-C) and SIGTERM end a
run KILLED (exit 130 / 143), Ctrl-C to the whole process group too (the tracking worker outlives
the command long enough to record it, then exits), and a run left RUNNING by SIGKILL is marked
FAILED by the next command. (An interrupted sweep: tests/e2e/test_sweep.py.)"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import read_runs, run_cli



def start_long_fit(tmp_path, uri, new_session=False):
    proc = subprocess.Popen([sys.executable, "-m", "runner", "model=gmm", "steps=50000000", f"tracking.uri={uri}"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=new_session)
    deadline = time.time() + 120
    while time.time() < deadline:  # the run is created (RUNNING) while the fit compiles
        time.sleep(0.5)
        if (tmp_path / "mlflow.db").exists():
            try:  # read_runs opens it under the store's lock: a reader must not migrate a store being created
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
    assert after.data.params["steps"] == "50000000"  # what there was (the config) is logged


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
    assert after.data.params["steps"] == "50000000"
    assert group_gone(proc.pid), "a process of the command outlived it"


def test_run_left_running_by_sigkill_is_marked_failed_by_the_next_command(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc, run = start_long_fit(tmp_path, uri)
    proc.kill()
    proc.wait()
    assert read_runs(uri)[1][0].info.status == "RUNNING"
    # the next command on the store reaps it, whatever its experiment
    nxt = run_cli(["model=coin", "steps=10", f"tracking.uri={uri}", "tracking.experiment=other"], cwd=tmp_path)
    assert nxt.returncode == 0, nxt.stderr
    assert f"marked run {run.info.run_id} FAILED" in nxt.stdout
    assert [r.info.status for r in read_runs(uri)[1]] == ["FAILED"]
    assert [r.info.status for r in read_runs(uri, "other")[1]] == ["FINISHED"]


def test_a_killed_tracking_worker_is_replaced_and_the_run_ends_finished(tmp_path):
    """The tracking worker killed mid-fit (OOM killer, a stray kill): a new worker takes over the
    same run (found by the command's pid tag) and logs it; one run, FINISHED, exit 0."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = subprocess.Popen([sys.executable, "-m", "runner", "model=gmm", "steps=3000000", f"tracking.uri={uri}"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    run = None
    while run is None and time.time() < deadline:
        time.sleep(0.3)
        if (tmp_path / "mlflow.db").exists():
            try:
                runs = read_runs(uri)[1]
            except Exception:
                continue
            run = runs[0] if runs and runs[0].info.status == "RUNNING" else None
    assert run is not None, "no RUNNING run appeared"
    workers = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "runner.tracking.worker"],
                             capture_output=True, text=True).stdout.split()
    assert len(workers) == 1
    os.kill(int(workers[0]), signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"a new tracking worker goes on with run {run.info.run_id}" in err
    (after,) = read_runs(uri)[1]
    assert after.info.run_id == run.info.run_id and after.info.status == "FINISHED"
    assert after.data.metrics["final_loss"] > 0 and after.data.params["steps"] == "3000000"


def test_sigterm_to_a_joblib_sweep_ends_its_running_jobs_killed(tmp_path):
    """The joblib launcher's workers are killed with the command (loky kills their process
    trees): the jobs they were running end KILLED with the parent, not FAILED by the reaper."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = subprocess.Popen([sys.executable, "-m", "runner", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                             "model=gmm", "steps=50000000", "seed=0,1", f"tracking.uri={uri}",
                             f"hydra.sweep.dir={tmp_path}/multirun"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, running = time.time() + 300, []
    while len(running) < 2 and time.time() < deadline:
        time.sleep(1)
        if (tmp_path / "mlflow.db").exists():
            try:
                running = [r for r in read_runs(uri)[1]
                           if r.info.status == "RUNNING" and r.data.tags.get("mlflow.parentRunId")]
            except Exception:
                continue
    assert len(running) == 2, "the two jobs did not start"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "runner: interrupted (SIGTERM)"
    runs = read_runs(uri)[1]
    assert sorted((r.data.tags.get("runner.role", "job"), r.info.status) for r in runs) == [
        ("job", "KILLED"), ("job", "KILLED"), ("sweep", "KILLED")]
    assert all("runner.stale" not in r.data.tags for r in runs)


def test_ctrl_c_while_the_results_are_logged_lets_the_run_complete(tmp_path):
    """Ctrl-C after the fit, while the results are logged (here 60000 curve points, some seconds):
    the logging completes (the run is whole and FINISHED), then the command stops with 130 and
    says so; the run is never KILLED with everything in it, nor FINISHED behind a bare 'interrupted'."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = subprocess.Popen([sys.executable, "-m", "runner", "model=coin", "steps=60000", "tracking.max_points_per_curve=null",
                             f"tracking.uri={uri}", f"hydra.run.dir={tmp_path}/run"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # the event: the run's params are in the store while it is still RUNNING. The run is opened with
    # its tags only; its params are the first thing the tracking worker logs for the completed run
    # (runner/tracking/mlflow/backend.py _log), which it does only once the command has handed it
    # the record inside its logging section; 60000 curve points in batches of 1000 follow (seconds)
    deadline, run = time.time() + 300, None
    while run is None:
        assert proc.poll() is None and time.time() < deadline, \
            f"the command did not reach its logging: {proc.poll() is not None and proc.communicate()[1]}"
        try:
            runs = read_runs(uri)[1] if (tmp_path / "mlflow.db").exists() else []
        except Exception:  # the store is being created or written: look again
            runs = []
        run = next((r for r in runs if r.info.status == "RUNNING" and r.data.params), None)
        time.sleep(0.05)  # polling interval, not a wait for anything
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    (run,) = read_runs(uri)[1]
    assert err.strip().splitlines()[-1] == (f"runner: interrupted while the results were logged: run "
                                            f"{run.info.run_id} is complete and FINISHED")
    assert run.info.status == "FINISHED" and "final_loss" in run.data.metrics
    assert "final_loss" not in out  # the summary is not printed: the command stopped


def test_an_interrupted_fit_resumes_from_its_checkpoint_to_the_same_numbers_as_one_run(tmp_path):
    """checkpoint.every_s: a long SVI fit writes its state between chunks; Ctrl-C keeps the last
    one. resume=<run id> (or the run directory) with the same command continues from it: the same
    numbers bit for bit as the uninterrupted fit, and the interrupted MLflow run, reopened, ends
    FINISHED as one run, without the error its interruption left; progress= may differ; -m with
    resume= is refused before anything is created."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    fit = ["model=gmm", "steps=1500000", f"tracking.uri={uri}"]
    whole = run_cli([*fit, f"hydra.run.dir={tmp_path}/whole"], cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    proc = subprocess.Popen([sys.executable, "-m", "runner", *fit, "checkpoint.every_s=0.5", f"hydra.run.dir={tmp_path}/cut"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    # the event: a checkpoint is there (written to a temporary file renamed over the last one, so it
    # is whole as soon as it exists); Ctrl-C from then on keeps the last one
    while not (tmp_path / "cut" / "checkpoint.npz").exists():
        assert proc.poll() is None and time.time() < deadline, "no checkpoint was written"
        time.sleep(0.05)  # polling interval
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    (cut,) = [r for r in read_runs(uri)[1] if r.data.tags["run_dir"] == f"{tmp_path}/cut"]
    assert cut.info.status == "KILLED"
    # refusals first: one line, exit 2, before any fit
    for args, said in [(["resume=nowhere"], "resume=nowhere is neither a run directory nor a run id of the store"),
                       ([f"resume={'0' * 32}"], f"resume={'0' * 32}: no such run in the store"),
                       (["resume=whole"], "resume: no checkpoint.npz in whole (an SVI fit writes one every checkpoint.every_s"),
                       (["model.K=3", f"resume={cut.info.run_id}"], f"resume: {tmp_path}/cut was a run of another config")]:
        bad = run_cli([*fit, *args, f"hydra.run.dir={tmp_path}/bad"], cwd=tmp_path)
        assert bad.returncode == 2 and bad.stderr.startswith(f"runner: error: {said}"), bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    # in a sweep: refused before anything is created (no sweep folder, no parent run)
    bad = run_cli(["-m", *fit, "seed=0,1", f"resume={cut.info.run_id}"], cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr == "runner: error: resume= continues one run: run it without -m\n"
    assert not (tmp_path / "multirun").exists() and len(read_runs(uri)[1]) == 2
    # display-only keys may differ (progress=): the run's params keep their first values
    again = run_cli([*fit, "progress=false", f"resume={cut.info.run_id}", f"hydra.run.dir={tmp_path}/again"],
                    cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again" / "latents.json").read_bytes() == (tmp_path / "whole" / "latents.json").read_bytes()
    assert json.loads((tmp_path / "again" / "metrics.json").read_text())["curves"]["loss"] == \
        json.loads((tmp_path / "whole" / "metrics.json").read_text())["curves"]["loss"]
    runs = {r.info.run_id: r for r in read_runs(uri)[1]}
    assert len(runs) == 2  # the whole fit's, and the interrupted one, reopened and finished
    done = runs[cut.info.run_id]
    assert done.info.status == "FINISHED" and done.data.tags["runner.resumed_from"] == f"{tmp_path}/cut"
    assert "error" not in done.data.tags and done.data.params["progress"] == "True"  # how it ended before: gone
    assert done.data.metrics["final_loss"] == runs[next(i for i in runs if i != cut.info.run_id)].data.metrics["final_loss"]
