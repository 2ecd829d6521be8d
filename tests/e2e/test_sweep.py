"""Real Hydra multiruns in subprocesses (basic, joblib and ray launchers) against a fresh sqlite
store: exact parent/child counts and statuses, aggregates equal to what the children logged,
resume skips the right jobs, an interrupted sweep resumes, a failed job does not stop the sweep.
(The sweep's helpers and aggregate, in-process: tests/unit/test_sweep.py, test_sweep_aggregate.py.)"""
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
    # aggregates per configuration across seeds equal what the children logged
    parent = client.get_run(parent.info.run_id)
    groups = {}
    for c in children:
        groups.setdefault(c.data.tags["config_group"], []).append(c.data.metrics["final_loss"])
    assert sorted(groups) == ["guide=autodelta model=gmm restarts=4 steps=20",
                              "guide=autonormal model=gmm restarts=4 steps=20"]
    for label, losses in groups.items():
        assert len(losses) == 2
        key = label.replace("=", "-")
        m = parent.data.metrics
        assert m[f"final_loss_mean/{key}"] == pytest.approx(np.mean(losses), rel=1e-6)
        assert m[f"final_loss_std/{key}"] == pytest.approx(np.std(losses), rel=1e-6, abs=1e-9)
        assert m[f"final_loss_min/{key}"] == pytest.approx(np.min(losses), rel=1e-6)
    assert parent.data.metrics["children_finished"] == n_jobs
    arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "summary.json" in arts and "plots" in arts


def test_basic_launcher_parent_children_and_resume(tmp_path):
    proc, client, parents, children = sweep(tmp_path)
    check_sweep(client, parents, children)
    assert "4 jobs, 4 run, 0 skipped" in proc.stdout
    jobs = [line.split()[1:3] for line in proc.stdout.splitlines() if "final_loss=" in line]
    assert jobs == [["job", f"{i}/4"] for i in (1, 2, 3, 4)]  # each job's line says which of the 4 it is
    # runner.compare: one sweep's children, best final loss first
    parent_id = parents[0].info.run_id
    out = subprocess.run([sys.executable, "-m", "runner.compare", "--uri", f"sqlite:///{tmp_path}/mlflow.db",
                          "--experiment", "sweep", "--sweep", parent_id], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].split() == ["guide", "guide.init_scale", "seed", "final_loss", "status", "run_id"]
    rows = [line.split() for line in lines[1:]]
    by_loss = sorted(children, key=lambda c: c.data.metrics["final_loss"])
    assert [r[-1] for r in rows] == [c.info.run_id for c in by_loss]
    assert all(r[-2] == "FINISHED" for r in rows)
    # the same command again: every job is skipped, the parent is reused, nothing is duplicated
    proc, client, parents, children = sweep(tmp_path)
    check_sweep(client, parents, children)
    assert "4 jobs, 0 run, 4 skipped" in proc.stdout
    # rerun=true forces all jobs (and a new parent for them)
    proc, client, parents, children = sweep(tmp_path, ["rerun=true"])
    assert "4 jobs, 4 run, 0 skipped" in proc.stdout
    assert len(parents) == 2 and len(children) == 8


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
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_failed"] == 1
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
