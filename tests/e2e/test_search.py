"""hydra/sweeper=optuna (runner/search.py) as a user runs it: real processes, a real Optuna study in
sqlite and a real MLflow store. Counts are exact: one parent per study, one FINISHED child per
trial that ran (tag trial_number), the parent's best trial = the study's = the best child's."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import free_port, postgres, read_runs, run_cli, wait_http

PARENT = "mlflow.parentRunId"


def search_args(folder, *extra):
    return ["-m", "hydra/sweeper=optuna", f"hydra.sweeper.storage=sqlite:///{folder}/optuna.db",
            f"tracking.uri=sqlite:///{folder}/mlflow.db", f"hydra.sweep.dir={folder}/multirun", "progress=false",
            "model=coin", *extra]


def load(folder):
    """(the one study of the storage, its parent run, its child runs)."""
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{folder}/optuna.db")
    study = optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{folder}/optuna.db")
    _, runs = read_runs(f"sqlite:///{folder}/mlflow.db")
    parents = [r for r in runs if PARENT not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    children = [r for r in runs if r.data.tags.get(PARENT) == parents[0].info.run_id]
    return study, parents[0], children


def check_best(study, parent, children):
    """The parent's best trial is the study's, and its value is the best FINISHED child's final_loss."""
    finished = [c for c in children if c.info.status == "FINISHED"]
    best = min(c.data.metrics["final_loss"] for c in finished)
    assert study.best_value == best
    assert parent.data.tags["best_trial"] == str(study.best_trial.number)
    assert float(parent.data.tags["best_value"]) == best == parent.data.metrics["final_loss"]
    assert parent.data.tags["best_trial_run_id"] == study.best_trial.user_attrs["run_id"]


@pytest.mark.timeout(1500)  # two commands, 300 s + 900 s allowed
def test_a_search_of_20_trials_survives_ctrl_c_and_the_next_command_continues_it(tmp_path):
    args = search_args(tmp_path, "steps=200", "optim.lr=tag(log, interval(0.001, 0.3))",
                       "guide=choice(autodelta, autonormal)", "hydra.sweeper.sampler.seed=0")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = []
    for line in proc.stdout:  # Ctrl-C once trial 4 has finished: trial 5 is being asked, compiled or fitted
        seen.append(line)
        if line.startswith("runner: trial 4 ("):
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, "".join(seen) + out + err
    assert "runner: interrupted" in err
    study, parent, children = load(tmp_path)
    assert parent.info.status == "KILLED"
    states = [t.state for t in study.trials]
    assert states[:5] == [optuna.trial.TrialState.COMPLETE] * 5
    assert optuna.trial.TrialState.RUNNING not in states  # the interrupted trial was told FAIL
    assert all(s == optuna.trial.TrialState.FAIL for s in states[5:]) and len(states) <= 6
    assert {c.info.status for c in children} <= {"FINISHED", "KILLED"}
    first = len(states)
    # the same command, for the rest of the 20 trials: the study and its parent continue
    proc = run_cli([*args, f"hydra.sweeper.n_trials={20 - first}"], cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert f"{first} trials so far, {20 - first} more" in proc.stdout
    numbers = [int(line.split()[2]) for line in proc.stdout.splitlines() if line.startswith("runner: trial ")]
    assert numbers == list(range(first, 20))
    study, parent, children = load(tmp_path)
    assert len(read_runs(f"sqlite:///{tmp_path}/mlflow.db")[1]) == 1 + len(children)  # every trial's run is its child
    assert parent.info.status == "FINISHED" and parent.data.tags["study_name"] == study.study_name
    assert parent.data.tags["search.optim.lr"] == "tag(log, interval(0.001, 0.3))"
    assert len(study.trials) == 20
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 20 - (first - 5)  # all but the interrupted one
    finished = {c.data.tags["trial_number"]: c for c in children if c.info.status == "FINISHED"}
    assert sorted(finished, key=int) == [str(t.number) for t in complete]  # one FINISHED child per trial, numbered
    for t in complete:  # the objective is the logged final_loss
        assert finished[str(t.number)].data.metrics["final_loss"] == t.value
        assert finished[str(t.number)].info.run_id == t.user_attrs["run_id"]
    assert [c.info.status for c in children if c.data.tags["trial_number"] not in finished] == ["KILLED"] * (first - 5)
    check_best(study, parent, children)


def test_a_trial_whose_config_finished_gets_that_runs_value_and_replicates_their_mean(tmp_path):
    """Two configurations, six trials: the repeats are skipped (their twin under this study's
    parent FINISHED) and told the twin's value, never FAIL; with replicates=2 the value is the
    logged final_loss, the replicates' mean."""
    args = search_args(tmp_path, "steps=100", "replicates=2", "optim.lr=choice(0.01, 0.1)",
                       "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=1", "hydra.sweeper.n_trials=6")
    proc = run_cli(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study, parent, children = load(tmp_path)
    runs = [c for c in children if "trial_number" in c.data.tags]  # (the replicates are the trial runs' children)
    _, everything = read_runs(f"sqlite:///{tmp_path}/mlflow.db")
    assert len(runs) == 2 and len(everything) == 1 + 2 + 2 * 2
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 6
    by_lr = {r.data.params["optim.lr"]: r for r in runs}
    for t in study.trials:
        run = by_lr[str(t.params["optim.lr"])]
        assert t.value == run.data.metrics["final_loss"] == run.data.metrics["final_loss_mean"]
        assert t.user_attrs["run_id"] == run.info.run_id
    skipped = [t for t in study.trials if "skipped_for" in t.user_attrs]
    assert len(skipped) == 4 and "6 jobs, 2 run, 4 skipped, 0 failed" in proc.stdout
    assert parent.data.tags["jobs_skipped"] == "4"
    check_best(study, parent, runs)
    results = (tmp_path / "multirun" / "optimization_results.yaml").read_text()
    assert f"best_value: {study.best_value}" in results
    # optuna-dashboard reads the stored study: its 6 trials, the best value
    port = free_port()
    dashboard = subprocess.Popen([str(Path(sys.executable).parent / "optuna-dashboard"), f"sqlite:///{tmp_path}/optuna.db",
                                  "--port", str(port), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/studies", dashboard)
        (listed,) = get_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        assert listed["study_name"] == study.study_name
        detail = get_json(f"http://127.0.0.1:{port}/api/studies/{listed['study_id']}")
        assert len(detail["trials"]) == 6 and [t["state"] for t in detail["trials"]] == ["Complete"] * 6
        assert min(t["values"][0] for t in detail["trials"]) == study.best_value
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)


def get_json(url):
    import json
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def test_a_search_with_nothing_to_search_is_one_line_and_opens_no_run(tmp_path):
    proc = run_cli(search_args(tmp_path, "steps=100"), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "runner: error: hydra/sweeper=optuna has nothing to search: give a range, e.g. "
        "'optim.lr=tag(log, interval(0.001, 0.3))' (or hydra.sweeper.params)")
    _, runs = read_runs(f"sqlite:///{tmp_path}/mlflow.db")
    assert runs == [] and not (tmp_path / "optuna.db").exists()


def test_a_pruned_trial_stops_early_ends_tagged_and_frees_its_slot(tmp_path):
    """The median pruner on the fit's reports (every 100 of 400 steps): a pruned trial's run ends
    KILLED with the tag `pruned` at a reported step before the last, its trial PRUNED, and the
    search still runs all its trials; the best is a completed trial's."""
    args = search_args(tmp_path, "guide=autonormal", "steps=400", "optim.lr=tag(log, interval(0.0001, 0.1))",
                       "hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=2",
                       "hydra.sweeper.reports=4", "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0",
                       "hydra.sweeper.n_trials=8")
    proc = run_cli(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study, parent, children = load(tmp_path)
    assert len(study.trials) == 8 and len(children) == 8
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert pruned and len(pruned) + len(complete) == 8
    by_number = {c.data.tags["trial_number"]: c for c in children}
    for t in complete:  # reported at the same four steps, the last one the fit's end
        assert sorted(t.intermediate_values) == [100, 200, 300, 400]
        assert by_number[str(t.number)].info.status == "FINISHED"
    for t in pruned:
        step = max(t.intermediate_values)
        assert step in (100, 200, 300)
        run = by_number[str(t.number)]
        assert run.info.status == "KILLED" and run.data.tags["pruned"].startswith(f"at step {step} ")
        assert "error" not in run.data.tags
    assert f"0 failed, {len(pruned)} pruned; {len(complete)} finished child runs" in proc.stdout
    assert parent.data.tags["jobs_pruned"] == str(len(pruned))
    check_best(study, parent, children)


def test_a_study_stored_in_postgresql(tmp_path):
    """A real PostgreSQL (started here: conftest.postgres, as for tests/e2e/test_tracking_server.py) as the study's
    storage: the search runs, the study is read back from the server, the parent names it."""
    with postgres("optuna") as storage:
        args = [a for a in search_args(tmp_path, "steps=100", "optim.lr=tag(log, interval(0.001, 0.3))",
                                       "hydra.sweeper.n_trials=3") if not a.startswith("hydra.sweeper.storage=")]
        proc = run_cli([*args, f"hydra.sweeper.storage={storage}"], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (summary,) = optuna.get_all_study_summaries(storage)
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
        _, runs = read_runs(f"sqlite:///{tmp_path}/mlflow.db")
        (parent,) = [r for r in runs if PARENT not in r.data.tags]
        assert parent.data.tags["study_storage"] == storage and len(runs) == 4
        check_best(study, parent, [r for r in runs if PARENT in r.data.tags])
