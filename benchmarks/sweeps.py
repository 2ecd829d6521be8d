"""Sweep throughput, measured side by side in one run (each command a fresh CLI process, as a
user runs it, against one fresh sqlite store per command).

    python benchmarks/sweeps.py

1. 8 seeds: `replicates=8` (one process, one compiled program) vs `-m seed=0..7` with the basic
   launcher vs the joblib launcher (2 workers); the same final losses per seed.
2. a 12-job sweep (3 seeds x 2 guides x 2 learning rates): basic vs joblib (2) vs ray.
3. logging cost per run: time inside MLflow calls / total time of an in-process run.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BASE = ["model=gmm", "guide=autonormal", "steps=200", "restarts=100", "select=final"]
SEEDS8 = "seed=" + ",".join(map(str, range(8)))
TWELVE = ["model=gmm", "seed=0,1,2", "guide=autodelta,autonormal", "optim.lr=0.01,0.1", "steps=200",
          "restarts=20"]


def cli(args, tmp: Path, name: str) -> float:
    d = tmp / name
    d.mkdir()
    cmd = [sys.executable, "-m", "runner", *args, f"tracking.uri=sqlite:///{d}/mlflow.db",
           f"jax.cache_dir={d}/jax-cache", f"hydra.run.dir={d}/run", f"hydra.sweep.dir={d}/multirun"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=d, capture_output=True, text=True, env={**os.environ})
    if out.returncode:
        raise SystemExit(f"{name} failed:\n{out.stderr[-2000:]}")
    return time.perf_counter() - t0


def final_losses(tmp: Path, name: str) -> dict:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp / name}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("runner")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return {int(r.data.params["seed"]): round(r.data.metrics["final_loss"], 4) for r in runs
            if r.data.tags.get("runner.role") != "sweep" and "replicates" not in r.data.metrics}


def logging_share(tmp: Path) -> float:
    from runner.api import compose
    from runner.app import execute
    from runner.tracking import Tracker

    spent = []
    original = Tracker.log_run

    def timed(self, **kw):
        t0 = time.perf_counter()
        try:
            return original(self, **kw)
        finally:
            spent.append(time.perf_counter() - t0)

    Tracker.log_run = timed
    cfg, choices = compose(["model=gmm", f"tracking.uri=sqlite:///{tmp}/share.db", "jax.cache_dir=null"])
    execute(cfg, choices, tmp / "share-warmup")  # creates the store
    spent.clear()
    t0 = time.perf_counter()
    execute(cfg, choices, tmp / "share")
    return sum(spent) / (time.perf_counter() - t0)


def main():
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t_rep = cli([*BASE, "replicates=8"], tmp, "replicates")
        t_basic = cli(["-m", *BASE, SEEDS8], tmp, "basic8")
        t_joblib = cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *BASE, SEEDS8], tmp, "joblib8")
        same = final_losses(tmp, "replicates") == final_losses(tmp, "basic8") == final_losses(tmp, "joblib8")
        print(f"8 seeds: replicates=8 {t_rep:6.1f} s | -m basic {t_basic:6.1f} s | -m joblib(2) {t_joblib:6.1f} s")
        print(f"  basic / replicates = {t_basic / t_rep:.1f}x (target >= 4x); joblib / replicates = "
              f"{t_joblib / t_rep:.1f}x; same final loss per seed: {same}")
        t12 = {name: cli(["-m", *launcher, *TWELVE], tmp, f"twelve-{name}") for name, launcher in [
            ("basic", []), ("joblib", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]),
            ("ray", ["hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2",
                     "+hydra.launcher.ray.init.include_dashboard=false"])]}
        print("12-job sweep: " + " | ".join(f"{k} {v:6.1f} s" for k, v in t12.items())
              + f"   basic / joblib = {t12['basic'] / t12['joblib']:.2f}x, basic / ray = {t12['basic'] / t12['ray']:.2f}x")
        print(f"logging cost per run (time in MLflow calls / total, gmm tutorial run): {logging_share(tmp):.1%}")


if __name__ == "__main__":
    main()
