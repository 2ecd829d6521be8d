"""hydra/launcher=vectorized (runner/fusion.py, runner/inference/svi/fused.py) as a user runs it: real
Hydra multiruns in subprocesses against real sqlite stores, side by side with Hydra's basic
launcher on the same sweep. Each fused job is still a job (one FINISHED child per job, its own
params, metrics, files), with the numbers of the same job run alone: final losses equal to 1e-6
relative (measured: bit for bit on this machine; a traced learning rate and a constant one are
the same float32 number, but XLA may fuse a constant differently, so the test allows the last
bits of float32). Pruning stops exactly the jobs successive halving says, at its rungs."""
import optuna
import pytest
from conftest import read_runs, run_cli

PARENT = "mlflow.parentRunId"
#: 6 jobs: 3 learning rates x 2 seeds of the coin with a stochastic guide (its losses differ per seed)
COIN = ["model=coin", "guide=autonormal", "steps=300", "optim.lr=0.003,0.01,0.03", "seed=0,1"]


def sweep(folder, args, launcher=None, experiment="fused"):
    """(the command's output, the parent run, its child runs) of `python -m runner -m <args>`."""
    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder}/mlflow.db"
    cmd = ["-m", *args, f"tracking.uri={uri}", f"tracking.experiment={experiment}",
           f"hydra.sweep.dir={folder}/multirun", "progress=false"]
    if launcher:
        cmd.insert(1, f"hydra/launcher={launcher}")
    proc = run_cli(cmd, cwd=folder)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    client, runs = read_runs(uri, experiment)
    parents = [r for r in runs if PARENT not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get(PARENT) == parents[0].info.run_id]
    assert len(runs) == 1 + len(children)
    return proc, client, parents[0], children


def by_config(children, *keys):
    return {tuple(c.data.params[k] for k in keys): c for c in children}


def files_in(folder) -> list:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def artifacts(client, run) -> set:
    def walk(path):
        for f in client.list_artifacts(run.info.run_id, path):
            yield from walk(f.path) if f.is_dir else [f.path]

    return set(walk(None))


def test_a_fused_sweep_gives_each_job_its_own_run_with_the_numbers_of_the_job_run_alone(tmp_path):
    _, client_b, parent_b, basic = sweep(tmp_path / "basic", COIN)
    proc, client_f, parent_f, fused = sweep(tmp_path / "fused", COIN, launcher="vectorized")
    assert "runner: vectorized launcher: 6 jobs: 6 in 1 fused program(s), 0 one by one" in proc.stdout
    assert "group 1: 6 jobs fused (model=coin guide=autonormal steps=300; varying optim.lr, seed)" in proc.stdout
    assert len(basic) == len(fused) == 6
    assert all(c.info.status == "FINISHED" for c in fused)
    b, f = by_config(basic, "optim.lr", "seed"), by_config(fused, "optim.lr", "seed")
    assert sorted(b) == sorted(f) and len(f) == 6
    finals = []
    for config, alone in b.items():
        mine = f[config]
        assert mine.data.metrics["final_loss"] == pytest.approx(alone.data.metrics["final_loss"], rel=1e-6, abs=0)
        finals.append(mine.data.metrics["final_loss"])
        assert set(mine.data.metrics) == set(alone.data.metrics)  # the same diagnostics
        assert set(mine.data.params) == set(alone.data.params)
        assert mine.data.tags["fused_group"] == "1 (6 jobs)" and "fused_group" not in alone.data.tags
        assert mine.data.tags["config_hash"] == alone.data.tags["config_hash"]  # the same config: twins
        assert artifacts(client_f, mine) == artifacts(client_b, alone)  # the same files, figures included
        curve_f = [m.value for m in client_f.get_metric_history(mine.info.run_id, "loss")]
        curve_b = [m.value for m in client_b.get_metric_history(alone.info.run_id, "loss")]
        assert len(curve_f) == len(curve_b) == 300 and curve_f == pytest.approx(curve_b, rel=1e-6)
    assert len(set(finals)) == 6  # six different jobs, not one answer copied
    # each job's files, written ahead while the job before it was logged, are in its own folder
    for job in sorted((tmp_path / "basic" / "multirun").glob("[0-9]*")):
        other = tmp_path / "fused" / "multirun" / job.name
        assert files_in(other) == files_in(job), job.name
    assert not list((tmp_path / "fused" / "multirun").glob(".runner-ahead*"))
    # the sweep's best is the same job either way
    assert parent_f.data.metrics["final_loss"] == pytest.approx(parent_b.data.metrics["final_loss"], rel=1e-6)


def test_a_sweep_of_fusable_and_unfusable_choices_runs_in_groups_and_says_so(tmp_path):
    args = ["model=gmm", "guide=autodelta,autonormal", "optim.lr=0.03,0.1", "steps=20", "restarts=4",
            "optim=adam,sgd"]
    proc, _, _, children = sweep(tmp_path, args, launcher="vectorized")
    out = proc.stdout
    assert "runner: vectorized launcher: 8 jobs: 8 in 4 fused program(s), 0 one by one" in out
    for guide in ("autodelta", "autonormal"):
        for optim in ("adam", "sgd"):
            assert f"2 jobs fused (model=gmm guide={guide} steps=20 restarts=4 optim={optim}; varying optim.lr)" in out
    assert len(children) == 8 and all(c.info.status == "FINISHED" for c in children)
    assert sorted(c.data.tags["fused_group"] for c in children) == sorted(f"{n} (2 jobs)" for n in (1, 2, 3, 4) for _ in "ab")
    # NUTS fits one experiment at a time: its jobs run one by one, in the same sweep
    proc, _, _, children = sweep(tmp_path / "nuts", ["model=gmm", "inference=svi,nuts", "seed=0,1", "steps=50"],
                                 launcher="vectorized")
    assert "4 jobs: 2 in 1 fused program(s), 2 one by one" in proc.stdout
    assert "group 2: 2 job(s) one by one (model=gmm inference=nuts steps=50): inference=nuts fits one experiment " \
           "at a time" in proc.stdout
    assert sorted(c.data.tags["inference"] for c in children) == ["nuts", "nuts", "svi", "svi"]
    assert all(c.info.status == "FINISHED" for c in children)


def test_a_sweep_run_again_fits_only_the_jobs_that_did_not_finish(tmp_path):
    """The same sweep again (its parent resumed): a job FINISHED under it is skipped by its run, so
    the launcher leaves it out of every group (it fitted all four again, then skipped them)."""
    args = ["model=coin", "guide=autonormal", "steps=50", "optim.lr=0.01,0.03", "seed=0,1"]
    _, client, parent, children = sweep(tmp_path, args, launcher="vectorized")
    assert len(children) == 4
    proc, _, again, same = sweep(tmp_path, args, launcher="vectorized")
    assert again.info.run_id == parent.info.run_id and {c.info.run_id for c in same} == {c.info.run_id for c in children}
    assert "runner: vectorized launcher: 4 jobs: 0 in 0 fused program(s), 0 one by one, 4 FINISHED before " \
           "(skipped)" in proc.stdout and "group 1" not in proc.stdout
    assert proc.stdout.count("runner: skipped ") == 4
    gone = by_config(children, "optim.lr", "seed")[("0.03", "1")]
    client.delete_run(gone.info.run_id)  # one job's run deleted: that job runs again, alone
    proc, _, _, now = sweep(tmp_path, args, launcher="vectorized")
    assert "4 jobs: 0 in 0 fused program(s), 1 one by one, 3 FINISHED before (skipped)" in proc.stdout
    assert "group 1: 1 job(s) one by one (model=coin guide=autonormal steps=50 optim.lr=0.03 seed=1): nothing to fuse " \
           "it with" in proc.stdout
    assert proc.stdout.count("runner: skipped ") == 3 and len(now) == 4
    rerun = by_config(now, "optim.lr", "seed")[("0.03", "1")]
    assert rerun.info.run_id != gone.info.run_id and rerun.info.status == "FINISHED"
    assert rerun.data.metrics["final_loss"] == pytest.approx(gone.data.metrics["final_loss"], rel=1e-6, abs=0)


def test_successive_halving_stops_the_worst_jobs_at_its_rungs_and_keeps_the_best(tmp_path):
    """The coin's MAP (guide=autodelta: a deterministic objective, so the ranking at a rung is
    exact): the slow learning rates are behind at the rungs and stop; the job left is as good as
    the best of the full sweep."""
    lrs = "optim.lr=0.0003,0.001,0.003,0.01,0.02,0.03,0.05,0.1"
    args = ["model=coin", "guide=autodelta", "steps=400", lrs]
    _, _, _, full = sweep(tmp_path / "full", args, launcher="vectorized")
    proc, _, parent, pruned = sweep(tmp_path / "pruned", [*args, "hydra.launcher.prune=halving"], launcher="vectorized")
    # rungs at 400/8 = 50, 100, 200: of 8 jobs 4 stop at 50, 2 at 100, 1 at 200, 1 trains to the end
    at = {c.data.params["optim.lr"]: int(c.data.tags["pruned_at_step"]) for c in pruned if c.data.tags.get("pruned") == "yes"}
    assert sorted(at.values()) == [50, 50, 50, 50, 100, 100, 200]
    assert at["0.0003"] == at["0.001"] == at["0.003"] == 50  # the slowest are behind at the first rung
    assert all(c.info.status == "FINISHED" for c in pruned) and len(pruned) == 8
    assert proc.stdout.count("pruned at step") == 7
    assert sum(400 - s for s in at.values()) == 2200  # of 3200 steps: 69% not trained
    (kept,) = [c for c in pruned if "pruned" not in c.data.tags]
    best = min(c.data.metrics["final_loss"] for c in full)
    full_by_lr = by_config(full, "optim.lr")
    assert kept.data.metrics["final_loss"] == pytest.approx(best, rel=1e-6)
    assert kept.data.metrics["final_loss"] == pytest.approx(
        full_by_lr[(kept.data.params["optim.lr"],)].data.metrics["final_loss"], rel=1e-6)  # not pruned: as in the full sweep
    assert parent.data.metrics["final_loss"] == pytest.approx(best, rel=1e-6)
    slow = full_by_lr[("0.0003",)].data.metrics["final_loss"]
    assert slow > best + 0.01  # pruning had something to find: the slowest job is clearly worse
    one = next(c for c in pruned if c.data.params["optim.lr"] == "0.0003")
    assert one.data.metrics["pruned_at_step"] == 50


def test_the_optuna_sweeper_gets_the_same_trial_values_from_the_fused_launcher(tmp_path):
    def search(folder, *launcher):
        folder.mkdir()
        args = ["hydra/sweeper=optuna", *launcher, f"hydra.sweeper.storage=sqlite:///{folder}/optuna.db",
                "hydra.sweeper.n_trials=16", "hydra.sweeper.n_jobs=8", "hydra.sweeper.sampler.seed=0",
                "hydra.sweeper.sampler.n_startup_trials=4",  # the second batch's TPE proposals follow the first's values
                "model=coin", "guide=autonormal", "steps=200", "optim.lr=tag(log, interval(0.001, 0.3))"]
        proc, _, _, children = sweep(folder, args)
        (summary,) = optuna.get_all_study_summaries(f"sqlite:///{folder}/optuna.db")
        study = optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{folder}/optuna.db")
        return proc, study, children

    _, basic, _ = search(tmp_path / "basic")
    proc, fused, children = search(tmp_path / "fused", "hydra/launcher=vectorized")
    assert proc.stdout.count("8 jobs: 8 in 1 fused program(s)") == 2  # two batches of n_jobs=8 trials
    assert len(fused.trials) == len(basic.trials) == 16 and len(children) == 16
    for a, b in zip(basic.trials, fused.trials):
        assert a.params == b.params
        assert b.value == pytest.approx(a.value, rel=1e-6)
    assert fused.best_trial.number == basic.best_trial.number


def test_a_launcher_setting_out_of_range_is_one_line_and_the_parent_does_not_stay_running(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_cli(["-m", "hydra/launcher=vectorized", "hydra.launcher.prune=median", "model=coin", "seed=0,1",
                    f"tracking.uri={uri}", f"hydra.sweep.dir={tmp_path}/multirun"], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == \
        "runner: error: hydra.launcher.prune must be one of halving or null, got 'median'"
    _, runs = read_runs(uri)
    assert [r.info.status for r in runs] == ["FAILED"]
