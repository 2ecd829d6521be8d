"""Real Hydra multiruns in subprocesses (basic, joblib and ray launchers) against a fresh sqlite
store: exact parent/child counts and statuses, aggregates equal to what the children logged,
resume skips the right jobs, an interrupted sweep resumes, a failed job does not stop the sweep.
(The sweep's helpers and aggregate, in-process: tests/unit/test_sweep.py, test_sweep_aggregate.py.)"""
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import read_runs, run_cli

SWEEP = ["model=gmm", "guide=autodelta,autonormal", "seed=0,1", "steps=20", "restarts=4"]


def sweep(tmp_path, extra=(), launcher=None, experiment="sweep"):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["-m", *SWEEP, f"tracking.uri={uri}", f"tracking.experiment={experiment}",
            f"hydra.sweep.dir={tmp_path}/multirun", *extra]
    if launcher:
        args.insert(1, f"hydra/launcher={launcher}")
    proc = run_cli(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, runs = read_runs(uri, experiment)
    parents = [r for r in runs if r.data.tags.get("runner.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    return proc, client, parents, children


def compare(folder, *args, uri=None, columns=80):
    """`python -m runner.compare` on the folder's store, in a terminal `columns` wide."""
    import os

    return subprocess.run([sys.executable, "-m", "runner.compare", "--uri", uri or f"sqlite:///{folder}/mlflow.db",
                           "--experiment", "sweep", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": str(columns)})


def check_sweep(client, parents, children, n_jobs=4):
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sweep_overrides"] == " ".join(SWEEP)
    assert len(children) == n_jobs
    assert all(c.info.status == "FINISHED" for c in children)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert len({c.data.tags["config_hash"] for c in children}) == n_jobs
    assert {c.info.run_name for c in children} == {f"gmm-{g}-seed{s}-steps20-restarts4"
                                                   for g in ("autodelta", "autonormal") for s in (0, 1)}
    # the aggregate per configuration across seeds is a table artifact, not metric names: the
    # parent's only metric is the children's own `final_loss` (the best), so it adds no chart
    parent = client.get_run(parent.info.run_id)
    groups = {}
    for c in children:
        groups.setdefault(c.data.tags["config_group"], []).append(c)
    assert sorted(groups) == ["guide=autodelta model=gmm restarts=4 steps=20",
                              "guide=autonormal model=gmm restarts=4 steps=20"]
    assert all(sorted(c.data.tags["seed"] for c in runs) == ["0", "1"] for runs in groups.values())
    losses = {c.info.run_id: c.data.metrics["final_loss"] for c in children}
    # autodelta's final loss is the MAP objective, autonormal's a negative ELBO: the best is the best
    # ELBO, the MAP runs are ranked apart (runner.sweep.ranked_objective)
    assert {c.data.tags["objective"] for c in children if c.data.tags["guide"] == "autodelta"} == {"map"}
    assert {c.data.tags["objective"] for c in children if c.data.tags["guide"] == "autonormal"} == {"elbo"}
    elbo = {k: v for k, v in losses.items() if k in {c.info.run_id for c in children if c.data.tags["objective"] == "elbo"}}
    best = min(elbo, key=elbo.get)
    apart = min(set(losses) - set(elbo), key=losses.get)
    assert parent.data.metrics == {"final_loss": pytest.approx(losses[best], rel=1e-6)}
    tags = parent.data.tags
    assert (tags["best_run_id"], tags["children_finished"], tags["configs"]) == (best, str(n_jobs), "2")
    assert (tags["ranked_objective"], tags["apart_objective"], tags["apart_runs"], tags["apart_best_run_id"]) == (
        "elbo", "map", "2", apart)
    assert tags["mlflow.note.content"].startswith(
        "Sweep of 4 jobs over guide (autodelta, autonormal) x seed (0, 1); fixed: model=gmm steps=20 restarts=4.")
    table = read_table(client, parent)
    assert list(table["config"]) == sorted(groups) and list(table["n"]) == [2, 2]
    assert list(table["seeds"]) == ["0 1", "0 1"]
    for row in table.itertuples():
        values = [losses[c.info.run_id] for c in groups[row.config]]
        assert row.mean == pytest.approx(np.mean(values), rel=1e-5)  # 6 significant digits
        assert row.std == pytest.approx(np.std(values), rel=1e-5, abs=1e-9)
        assert (row.min, row.max) == (pytest.approx(min(values), rel=1e-5), pytest.approx(max(values), rel=1e-5))
    arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.json", "sweep_table.json", "plots"} <= arts


def read_table(client, parent):
    """The parent's table artifact (MLflow's table format: columns and rows), one row per configuration."""
    import json
    import tempfile

    import pandas as pd

    with tempfile.TemporaryDirectory() as d:
        path = client.download_artifacts(parent.info.run_id, "sweep_table.json", d)
        table = json.loads(open(path).read())
    return pd.DataFrame(table["data"], columns=table["columns"]).sort_values("config").reset_index(drop=True)


def test_basic_launcher_parent_children_and_resume(tmp_path):
    proc, client, parents, children = sweep(tmp_path)
    check_sweep(client, parents, children)
    assert "4 jobs, 4 run, 0 skipped" in proc.stdout
    jobs = [line.split()[1:3] for line in proc.stdout.splitlines() if line.startswith("runner: job")]
    assert jobs == [["job", f"{i}/4"] for i in (1, 2, 3, 4)]  # each job's line says which of the 4 it is
    best = min((c for c in children if c.data.tags["objective"] == "elbo"), key=lambda c: c.data.metrics["final_loss"])
    assert (f"runner: sweep best final_loss={best.data.metrics['final_loss']:.6g} (ELBO) {best.data.tags['config_group']} "
            f"(run {best.info.run_id})") in proc.stdout.splitlines()
    assert "runner: sweep: 2 run(s) minimise the MAP objective, not the ELBO: ranked apart" in proc.stdout
    # runner.compare: one sweep's children, best final loss first, the MAP runs (autodelta) ranked
    # apart below a line that says why, in an 80-column terminal
    parent_id = parents[0].info.run_id
    out = compare(tmp_path, "--sweep", parent_id)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    # guide.init_scale (autonormal's alone) follows from the guide column: left out; status (all
    # FINISHED) and the choices every run shares are constant: left out; a run by its id's first 8
    assert lines[0].split() == ["guide", "seed", "final_loss", "run_id"]
    assert max(len(line) for line in lines if not line.startswith("--")) == 38  # 10, 4, 10, 8 and 3 gaps of 2
    assert lines[3] == "-- MAP runs, ranked apart: a MAP loss (a negative log joint) is not an ELBO --"
    rows = [line.split() for line in lines[1:3] + lines[4:]]
    by_loss = sorted(children, key=lambda c: (c.data.tags["objective"] == "map", c.data.metrics["final_loss"]))
    assert [r[-1] for r in rows] == [c.info.run_id[:8] for c in by_loss]
    assert [r[0] for r in rows] == ["autonormal", "autonormal", "autodelta", "autodelta"]
    narrow = compare(tmp_path, "--sweep", parent_id, columns=35).stdout.splitlines()
    assert narrow[0].split() == ["guide", "final_loss", "run_id"]
    assert max(len(line) for line in narrow[:6] if not line.startswith("--")) <= 35
    assert " ".join(narrow[6:]) == "(1 more differing column(s) left out to fit the terminal: seed; --all shows every column)"
    everything = compare(tmp_path, "--sweep", parent_id, "--all").stdout.splitlines()
    assert everything[0].split()[:4] == ["guide", "guide.init_scale", "seed", "final_loss"]
    assert everything[0].split()[-1] == "run_id" and everything[1].split()[-1] == by_loss[0].info.run_id
    cells = [line.split() for line in everything[1:] if not line.startswith("--")]
    assert len(cells) == 4 and "status" not in everything[0].split()
    # --sweep of a child's id, or of an id the store does not have: one line, exit 2 (was "no runs", exit 0)
    child_id = children[0].info.run_id
    out = compare(tmp_path, "--sweep", child_id)
    assert (out.returncode, out.stdout) == (2, "") and out.stderr.splitlines() == [
        f"runner.compare: error: --sweep {child_id}: that run is a child of sweep {parent_id}, not a sweep's "
        f"parent run: use --sweep {parent_id}"]
    out = compare(tmp_path, "--sweep", "0" * 32)
    assert out.returncode == 2 and out.stderr.startswith(f"runner.compare: error: --sweep {'0' * 32}: no such run in ")
    # a mistyped store: one line, exit 2, and no store created
    out = compare(tmp_path, uri=f"sqlite:///{tmp_path}/mlfow.db")
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr.splitlines() == [f"runner.compare: error: no MLflow store at {tmp_path}/mlfow.db (no such "
                                       "file): check --uri / tracking.uri= (default sqlite:///mlflow.db, in this folder)"]
    assert not (tmp_path / "mlfow.db").exists()
    # the same command again: every job is skipped, the parent is reused, nothing is duplicated
    proc, client, parents, children = sweep(tmp_path)
    check_sweep(client, parents, children)
    assert "4 jobs, 0 run, 4 skipped" in proc.stdout
    # rerun=true forces all jobs (and a new parent for them)
    proc, client, parents, children = sweep(tmp_path, ["rerun=true"])
    assert "4 jobs, 4 run, 0 skipped" in proc.stdout
    assert len(parents) == 2 and len(children) == 8


def test_a_sweep_runs_every_job_whatever_plain_runs_came_before(tmp_path):
    """A plain run of one of the sweep's configurations (the README's single runs, then its
    sweep) is not the sweep's: it used to be skipped silently and the sweep named a worse
    configuration its best. Only the same sweep run again skips its own finished jobs."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    plain = run_cli(["model=gmm", "guide=autodelta", "seed=1", "steps=20", "restarts=4", f"tracking.uri={uri}",
                     "tracking.experiment=sweep", f"hydra.run.dir={tmp_path}/plain"], cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr[-2000:]
    proc, client, parents, children = sweep(tmp_path)
    assert "4 jobs, 4 run, 0 skipped" in proc.stdout
    check_sweep(client, parents, children)
    hashes = {r.data.tags.get("config_hash") for r in read_runs(uri, "sweep")[1]
              if r.data.tags.get("runner.role") != "sweep" and not r.data.tags.get("mlflow.parentRunId")}
    assert len(hashes) == 1 and hashes <= {c.data.tags["config_hash"] for c in children}  # its twin ran
    proc, client, parents, children = sweep(tmp_path)  # the same sweep again: its own jobs are skipped
    assert "4 jobs, 0 run, 4 skipped" in proc.stdout and len(children) == 4
    # through another launcher it is another sweep (the README's joblib, then its Ray example)
    proc, client, parents, children = sweep(tmp_path, ["hydra.launcher.n_jobs=2"], launcher="joblib")
    assert "4 jobs, 4 run, 0 skipped" in proc.stdout and len(parents) == 2 and len(children) == 8
    by_launcher = {}  # the same jobs through the basic launcher and joblib: the same final losses
    for c in children:
        by_launcher.setdefault(c.data.tags["overrides"], []).append(c.data.metrics["final_loss"])
    assert len(by_launcher) == 4 and all(len(v) == 2 and v[0] == v[1] for v in by_launcher.values()), by_launcher


def test_interrupted_sweep_resumes_to_one_finished_child_per_job(tmp_path):
    import os

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = [sys.executable, "-m", "runner", "-m", *SWEEP, f"tracking.uri={uri}",
            "tracking.experiment=sweep", f"hydra.sweep.dir={tmp_path}/multirun"]
    # interrupt right after the first job prints its summary line (printed once its run is FINISHED);
    # driven by the sweep's own output, not by polling the store (a poller would race the store's creation)
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "final_loss=" in line:
            proc.send_signal(signal.SIGINT)
            break
    lines += proc.stdout.readlines()
    proc.wait(timeout=120)
    out = "".join(lines)
    assert proc.returncode != 0, out[-3000:]
    _, runs = read_runs(uri, "sweep")
    finished = [r for r in runs if r.info.status == "FINISHED" and r.data.tags.get("mlflow.parentRunId")]
    assert 1 <= len(finished) < 4, out[-3000:]
    assert proc.returncode == 130 and "runner: interrupted" in out
    # nothing is left RUNNING: the parent and the interrupted job's run end KILLED
    assert [r.info.status for r in runs if r.data.tags.get("runner.role") == "sweep"] == ["KILLED"]
    assert "RUNNING" not in {r.info.status for r in runs}
    _, client, parents, children = sweep(tmp_path)
    done = [c for c in children if c.info.status == "FINISHED"]
    assert len(done) == 4 and len({c.data.tags["config_hash"] for c in done}) == 4
    assert len(parents) == 1


def test_joblib_launcher_on_a_fresh_store(tmp_path):
    proc, client, parents, children = sweep(tmp_path, ["hydra.launcher.n_jobs=2"], launcher="joblib")
    check_sweep(client, parents, children)
    assert "4 jobs, 4 run, 0 skipped" in proc.stdout


def test_ray_launcher_on_a_fresh_store(tmp_path):
    proc, client, parents, children = sweep(
        tmp_path, ["+hydra.launcher.ray.init.num_cpus=2", "+hydra.launcher.ray.init.include_dashboard=false"],
        launcher="ray")
    check_sweep(client, parents, children)


def test_sweep_goes_on_when_a_job_fails(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_cli(["-m", "model=bmm,coin", "guide=manual", "steps=10", f"tracking.uri={uri}",
                    f"hydra.sweep.dir={tmp_path}/multirun"], cwd=tmp_path)
    assert proc.returncode == 1
    assert "2 jobs, 1 run, 0 skipped, 1 failed" in proc.stdout
    runs = read_runs(uri)[1]
    parent = [r for r in runs if r.data.tags.get("runner.role") == "sweep"][0]
    assert parent.info.status == "FINISHED" and parent.data.tags["jobs_failed"] == "1"
    assert [r.info.status for r in runs if r.data.tags.get("mlflow.parentRunId")] == ["FINISHED"]


# --- model comparison by PSIS-LOO (runner/loo.py): the parent's loo.json and runner.compare --loo ---

def loo_sweep(tmp_path, overrides, experiment):
    """A real multirun into a fresh sqlite store; returns (the parent's loo.json rows, the table
    `runner.compare --sweep <parent> --loo` prints, the children)."""
    import json

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_cli(["-m", *overrides, f"tracking.uri={uri}", f"tracking.experiment={experiment}",
                    f"hydra.sweep.dir={tmp_path}/multirun"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, runs = read_runs(uri, experiment)
    (parent,) = [r for r in runs if r.data.tags.get("runner.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    for c in children:
        assert "inference_data.nc" in {a.path for a in client.list_artifacts(c.info.run_id)}
    rows = json.loads(open(client.download_artifacts(parent.info.run_id, "loo.json", str(tmp_path))).read())
    assert "loo.txt" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    cmp = subprocess.run([sys.executable, "-m", "runner.compare", "--uri", uri, "--experiment", experiment,
                          "--sweep", parent.info.run_id, "--loo"], cwd=tmp_path, capture_output=True, text=True)
    assert cmp.returncode == 0, cmp.stderr
    return rows, cmp.stdout, children


def test_loo_ranks_the_tutorials_two_components_first(tmp_path):
    """The tutorial's data [0, 1, 10, 11, 12] under collapsed NUTS with K=1, 2, 3: two clusters
    predict best; K=3 is behind by more than 2 standard errors of the difference, K=1 far behind."""
    rows, table, children = loo_sweep(tmp_path, ["model=gmm", "inference=nuts", "model.K=1,2,3"], "loo_k")
    assert [r["run"] for r in rows] == ["model.K=2", "model.K=3", "model.K=1"]
    assert [r["rank"] for r in rows] == [0, 1, 2]
    for r in rows[1:]:
        assert r["elpd_diff"] > 2 * r["dse"] > 0
    ids = {c.info.run_name: c.info.run_id for c in children}
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["rank", "run", "elpd_loo"]
    assert [ln.split()[1] for ln in lines[1:4]] == ["gmm-nuts-K2", "gmm-nuts-K3", "gmm-nuts-K1"]
    assert lines[1].split()[-1] == ids["gmm-nuts-K2"] == rows[0]["run_id"]


def test_loo_of_guides_agrees_with_their_elbo(tmp_path):
    """The coin (12 heads, 8 tails, uniform prior) with three guides. The exact leave-one-out
    elpd is 12 log(12/21) + 8 log(8/21) = -14.436: the Beta guide (the exact family) and the
    Normal one reach it, as their final ELBOs agree (14.790); their elpds differ by less than the
    noise. The MAP point estimate ranks first on the plug-in density (p_loo = 0, elpd = its log
    likelihood at the MAP = -final_loss under a flat prior), with every Pareto k flagged: LOO
    says it cannot be trusted."""
    import math

    rows, table, _ = loo_sweep(tmp_path, ["model=coin", "guide=manual,autonormal,autodelta"], "loo_guides")
    by = {r["run"]: r for r in rows}
    exact = 12 * math.log(12 / 21) + 8 * math.log(8 / 21)
    for guide in ("guide=manual", "guide=autonormal"):
        assert by[guide]["elpd_loo"] == pytest.approx(exact, abs=0.1)
        assert by[guide]["pareto_k_bad"] == "0/20"
    elbo_gap = abs(by["guide=manual"]["final_loss"] - by["guide=autonormal"]["final_loss"])
    elpd_gap = abs(by["guide=manual"]["elpd_loo"] - by["guide=autonormal"]["elpd_loo"])
    assert elbo_gap < 0.01 and elpd_gap < 0.1  # equal within noise, by both measures
    point = by["guide=autodelta"]
    assert point["rank"] == 0 and point["p_loo"] == pytest.approx(0, abs=1e-4)  # (float32 sums)
    assert point["elpd_loo"] == pytest.approx(-point["final_loss"], abs=1e-3)
    assert point["pareto_k_bad"] == "20/20"
    assert "coin-autodelta" in table.splitlines()[1]


def test_a_long_data_path_sweep_ends_finished_with_short_names(tmp_path):
    """Issue 16: long labels (a 90-character data file name, deep in a folder) made per-config metric
    names longer than MLflow's 250 characters: the parent ended FAILED, and once names were cut at
    250 two configurations' statistics fell into one name. The parent now has no per-config metric
    names: its table has one row per configuration, and names stay short."""
    folder = tmp_path / ("p" * 120)
    folder.mkdir()
    data = folder / ("d" * 86 + ".csv")  # a 90-character file name; the whole path is over 200
    data.write_text("0.0\n1.0\n10.0\n11.0\n12.0\n")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_cli(["-m", "model=gmm", "data=file", f"data.path={data}", "optim.lr=0.05,0.1", "seed=0,1", "steps=20",
                    "restarts=2", f"tracking.uri={uri}", f"hydra.sweep.dir={tmp_path}/multirun"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 jobs, 4 run, 0 skipped, 0 failed; 4 finished child runs" in proc.stdout
    client, runs = read_runs(uri)
    (parent,) = [r for r in runs if r.data.tags.get("runner.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert parent.info.status == "FINISHED" and [c.info.status for c in children] == ["FINISHED"] * 4
    losses = {c.info.run_id: c.data.metrics["final_loss"] for c in children}
    assert parent.data.metrics == {"final_loss": pytest.approx(min(losses.values()), rel=1e-6)}
    assert parent.info.run_name == ("sweep model=gmm data=file data.path=ddddddddddddddd..ddddddddddd.csv "
                                    "optim.lr=0.05,0.1 seed=0,1 steps=20 restarts=2")
    assert sorted(c.info.run_name for c in children) == sorted(
        f"gmm-autodelta-file-ddddddddddd..ddddddddddd-lr{lr}-seed{s}-steps20-restarts2"
        for lr in ("0.05", "0.1") for s in (0, 1))
    groups = {f"data.path={data} data=file model=gmm optim.lr={lr} restarts=2 steps=20": lr for lr in ("0.05", "0.1")}
    assert {c.data.tags["config_group"] for c in children} == set(groups)  # whole, in a tag (no 250 limit)
    table = read_table(client, parent)
    assert table["config"].tolist() == sorted(groups) and table["n"].tolist() == [2, 2]
    for row in table.itertuples():
        mine = [losses[c.info.run_id] for c in children if c.data.tags["config_group"] == row.config]
        assert row.mean == pytest.approx(np.mean(mine), rel=1e-5)


def test_the_same_sweep_started_twice_at_once_runs_and_counts_each_job_once(tmp_path):
    """Issue 16: two copies of one sweep command at once ran a job twice and counted it twice
    (final_loss_n=4 for 3 seeds). A job now opens its run under the store's lock only when no
    other run of its config is RUNNING (in a live process) or FINISHED, and the parent's table
    counts each config hash once. Two real processes on one fresh store, each its own sweep dir."""
    import os

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["-m", "model=gmm", "guide=autodelta", "seed=0,1,2", "steps=300", "restarts=8",
            f"tracking.uri={uri}", "tracking.experiment=twice"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    procs = [subprocess.Popen([sys.executable, "-m", "runner", *args, f"hydra.sweep.dir={tmp_path}/multirun{i}"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in (0, 1)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    client, runs = read_runs(uri, "twice")
    parents = [r for r in runs if r.data.tags.get("runner.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # one parent, shared
    assert sorted(c.data.tags["seed"] for c in children) == ["0", "1", "2"]  # each job ran once
    assert all(c.info.status == "FINISHED" for c in children) and len({c.data.tags["config_hash"] for c in children}) == 3
    # between them the two commands ran 3 jobs and skipped 3 (each job: run by one, skipped by the other)
    done = [re.search(r"3 jobs, (\d) run, (\d) skipped, 0 failed", o[0]).groups() for o in outs]
    assert sum(int(r) for r, _ in done) == 3 and sum(int(s) for _, s in done) == 3, [o[0] for o in outs]
    table = read_table(client, client.get_run(parents[0].info.run_id))
    assert table["n"].tolist() == [3] and table["seeds"].tolist() == ["0 1 2"]
    losses = [c.data.metrics["final_loss"] for c in children]
    assert table["mean"].tolist() == [pytest.approx(np.mean(losses), rel=1e-5)]
