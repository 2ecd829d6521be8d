"""Sweep throughput, measured side by side in one run (each command a fresh CLI process, as a
user runs it, against one fresh sqlite store per command).

    python benchmarks/sweeps.py

1. 8 seeds: `replicates=8` (one process, one compiled program) vs `-m seed=0..7` with the basic
   launcher vs the joblib launcher (2 workers); the same final losses per seed. Each command runs
   twice into its own store and XLA cache: first on a fresh store and an empty cache (seeds
   100..107: every program compiled), then again (seeds 0..7: the persistent compile cache, on by
   default, holds the programs, as for every run after the first of a config).
2. a 12-job sweep (3 seeds x 2 guides x 2 learning rates): basic vs joblib (2) vs ray.
3. logging cost per run: time the command waits on its MLflow calls (done by the tracking worker
   process) / total time of an in-process run.
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


def seeds8(first: int) -> str:
    return "seed=" + ",".join(map(str, range(first, first + 8)))


TWELVE = ["model=gmm", "seed=0,1,2", "guide=autodelta,autonormal", "optim.lr=0.01,0.1", "steps=200",
          "restarts=20"]


def cli(args, tmp: Path, name: str) -> float:
    d = tmp / name
    d.mkdir(exist_ok=True)
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
    return {int(r.data.params["seed"]): r.data.metrics["final_loss"] for r in runs
            if r.data.tags.get("runner.role") != "sweep" and "replicates" not in r.data.metrics}


def agree(*per_seed: dict) -> str:
    """Same seeds, and the largest relative difference of their final losses (float32: a vmapped
    batch of 800 restarts and one of 100 round differently, ~2e-7)."""
    if any(d.keys() != per_seed[0].keys() for d in per_seed):
        return "False (different seeds)"
    diff = max(abs(d[s] - per_seed[0][s]) / abs(per_seed[0][s]) for d in per_seed for s in d)
    return f"{diff < 1e-5} (largest relative difference {diff:.1e})"


def logging_share(tmp: Path) -> float:
    import runner
    from runner.tracking.worker import Background

    spent = []
    original = Background.run_completed

    def timed(self, record):
        t0 = time.perf_counter()
        try:
            return original(self, record)
        finally:
            spent.append(time.perf_counter() - t0)

    Background.run_completed = timed
    overrides = ["model=gmm", f"tracking.uri=sqlite:///{tmp}/share.db", "jax.cache_dir=null"]
    runner.run(overrides, run_dir=tmp / "share-warmup", quiet=True)  # creates the store
    spent.clear()
    t0 = time.perf_counter()
    runner.run(overrides, run_dir=tmp / "share", quiet=True)
    return sum(spent) / (time.perf_counter() - t0)


def main():
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        commands = {"replicates": lambda first: [*BASE, "replicates=8", f"seed={first}"],
                    "basic8": lambda first: ["-m", *BASE, seeds8(first)],
                    "joblib8": lambda first: ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *BASE,
                                              seeds8(first)]}
        for label, first in [("first run (fresh store, empty XLA cache)", 100), ("next run (cache warm)", 0)]:
            t = {name: cli(make(first), tmp, name) for name, make in commands.items()}
            same = agree(*(final_losses(tmp, name) for name in commands))
            print(f"8 seeds, {label}: replicates=8 {t['replicates']:6.1f} s | -m basic {t['basic8']:6.1f} s"
                  f" | -m joblib(2) {t['joblib8']:6.1f} s")
            print(f"  basic / replicates = {t['basic8'] / t['replicates']:.2f}x (target >= 4x); joblib / replicates"
                  f" = {t['joblib8'] / t['replicates']:.2f}x; same final loss per seed: {same}")
        t12 = {name: cli(["-m", *launcher, *TWELVE], tmp, f"twelve-{name}") for name, launcher in [
            ("basic", []), ("joblib", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]),
            ("ray", ["hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2",
                     "+hydra.launcher.ray.init.include_dashboard=false"])]}
        print("12-job sweep: " + " | ".join(f"{k} {v:6.1f} s" for k, v in t12.items())
              + f"   basic / joblib = {t12['basic'] / t12['joblib']:.2f}x, basic / ray = {t12['basic'] / t12['ray']:.2f}x")
        print(f"logging cost per run (time waiting on MLflow calls / total, gmm tutorial run): {logging_share(tmp):.1%}")


if __name__ == "__main__":
    main()
