"""tracking=none from the command line: the run directory and nothing else (no store is created,
MLflow is not imported), single runs and sweeps alike; the sweep's aggregate is read from its
jobs' run directories."""
import json
import subprocess
import sys

import numpy as np
from conftest import run_cli


def test_a_run_without_mlflow(tmp_path):
    proc = run_cli(["model=coin", "guide=manual", "steps=500", "tracking=none", f"hydra.run.dir={tmp_path}/run"],
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"outputs={tmp_path}/run" in proc.stdout and "mlflow ui" not in proc.stdout
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(metrics["curves"]["loss"]) == 500


def test_mlflow_is_never_imported(tmp_path):
    code = ("import sys, runner\n"
            "out = runner.run(['model=coin', 'guide=manual', 'steps=200', 'tracking=none'], run_dir='run', quiet=True)\n"
            "assert out.run_id is None\n"
            "print(sorted(m for m in sys.modules if m == 'mlflow' or m.startswith('mlflow.')))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_a_sweep_without_mlflow_aggregates_its_run_directories(tmp_path):
    proc = run_cli(["-m", "model=coin", "guide=manual", "steps=300", "seed=0,1", "optim.lr=0.01,0.02",
                    "tracking=none", f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "runner: sweep done: 4 jobs, 4 run, 0 skipped, 0 failed; 4 finished child runs in" in proc.stdout
    assert not (tmp_path / "mlflow.db").exists()
    table = json.loads((tmp_path / "sweep" / "sweep" / "summary.json").read_text())
    assert [(row["config"], row["n"]) for row in table] == [
        ("guide=manual model=coin optim.lr=0.01 steps=300", 2), ("guide=manual model=coin optim.lr=0.02 steps=300", 2)]
    assert [row["seeds"] for row in table] == ["0 1", "0 1"]  # each (config, seed) once, as with MLflow
    jobs = [json.loads((tmp_path / "sweep" / job / "runner_status.json").read_text()) for job in ("0", "1", "2", "3")]
    overall = np.mean([j["final_loss"] for j in jobs])
    for row in table:  # each configuration's numbers are those of its own two jobs' final losses, exactly
        mine = [j["final_loss"] for j in jobs if j["config_group"] == row["config"]]
        assert len(mine) == 2 and mine[0] != mine[1], jobs
        assert (row["mean"], row["std"], row["min"], row["max"]) == (
            float(np.mean(mine)), float(np.std(mine)), min(mine), max(mine))
        assert row["mean"] != overall  # the two learning rates end apart: a mean over all jobs would differ
    assert (tmp_path / "sweep" / "sweep" / "plots" / "final_losses.png").is_file()
