"""A sweep as one compiled program (hydra/launcher=vectorized) vs a process's worth of work per job,
side by side in one run: each command a fresh CLI process, as a user runs it, with its own sqlite
store; the XLA compile cache warm (every command runs once before it is timed, into a store of its
own, so every launcher finds its programs compiled, as for every run after the first; joblib's jobs
compile the basic launcher's programs).

    python benchmarks/fused_sweeps.py            # GMM tutorial, coin, BMM on MNIST-5k: 8 lr x 4 seeds each
    python benchmarks/fused_sweeps.py --quick    # GMM and coin only

Per sweep: the wall time of the basic launcher (Hydra's, one job after another in one process),
the joblib launcher (2 worker processes), the vectorized launcher, and the vectorized launcher with
successive halving (hydra.launcher.prune=halving); the ratios to the basic launcher; that every
command left one parent and 32 FINISHED children; the largest relative difference of a job's
final loss between the basic and the vectorized launcher; the steps pruning saved and whether it
kept the job the full sweep found best.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LRS = "optim.lr=0.003,0.01,0.02,0.03,0.05,0.1,0.2,0.3"
SEEDS = "seed=0,1,2,3"
SWEEPS = {
    "GMM tutorial": ["model=gmm", "guide=autodelta"],
    "coin": ["model=coin", "guide=autonormal", "optim.lr=0.0005,0.001,0.002,0.003,0.005,0.01,0.02,0.03"],
    "BMM MNIST-5k": ["model=bmm", "data=mnist_sample", "data.n=5000", "data.binarize=0.5", "model.K=20",
                     "steps=200", "data.batch_size=1000"],
}
LAUNCHERS = {
    "basic": [],
    "joblib (2)": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "vectorized": ["hydra/launcher=vectorized"],
    "vectorized+halving": ["hydra/launcher=vectorized", "hydra.launcher.prune=halving"],
}


def command(args, folder: Path) -> list[str]:
    return [sys.executable, "-m", "runner", "-m", *args, f"tracking.uri=sqlite:///{folder}/mlflow.db",
            f"hydra.sweep.dir={folder}/multirun", "progress=false"]


def timed(args, folder: Path) -> float:
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    out = subprocess.run(command(args, folder), cwd=folder, capture_output=True, text=True, env={**os.environ})
    wall = time.perf_counter() - t0
    if out.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return wall


def children(folder: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    exp = client.get_experiment_by_name("runner")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    kids = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    ok = len(parents) == 1 and parents[0].info.status == "FINISHED" and all(r.info.status == "FINISHED" for r in kids)
    return kids if ok else []


def by_job(kids) -> dict:
    return {(r.data.params["optim.lr"], r.data.params["seed"]): r for r in kids}


def folder(tmp: Path, *parts: str) -> Path:
    """A folder name Hydra's override grammar reads in tracking.uri= (no spaces, brackets, +)."""
    import re

    return tmp / re.sub(r"[^A-Za-z0-9]+", "_", "-".join(parts))


def one_sweep(name: str, base: list, tmp: Path) -> list[str]:
    args = [*base, SEEDS] + ([] if any(a.startswith("optim.lr=") for a in base) else [LRS])
    walls = {}
    for launcher, extra in LAUNCHERS.items():  # warm: every program in the compile cache (joblib's are basic's)
        if not launcher.startswith("joblib"):
            timed([*extra, *args], folder(tmp, name, launcher, "warm"))
    for launcher, extra in LAUNCHERS.items():
        walls[launcher] = timed([*extra, *args], folder(tmp, name, launcher))
    runs = {launcher: children(folder(tmp, name, launcher)) for launcher in LAUNCHERS}
    lines = [f"{name}: 32 jobs ({' '.join(args)})"]
    for launcher, wall in walls.items():
        n = len(runs[launcher])
        lines.append(f"  {launcher:<20} {wall:7.1f} s  {walls['basic'] / wall:5.1f}x the basic launcher  "
                     f"children FINISHED under one parent: {n if n else 'NO'}")
    basic, fused = by_job(runs["basic"]), by_job(runs["vectorized"])
    worst = max(abs(fused[k].data.metrics["final_loss"] - r.data.metrics["final_loss"]) / abs(r.data.metrics["final_loss"])
                for k, r in basic.items())
    lines.append(f"  final losses, vectorized vs basic: largest relative difference {worst:.2g} over {len(basic)} jobs")
    pruned = runs["vectorized+halving"]
    steps = int(pruned[0].data.params["steps"])
    saved = sum(steps - int(r.data.tags["pruned_at_step"]) for r in pruned if r.data.tags.get("pruned") == "yes")
    best_full = min(runs["vectorized"], key=lambda r: r.data.metrics["final_loss"])
    best_pruned = min(pruned, key=lambda r: r.data.metrics["final_loss"])
    same = (best_pruned.data.params["optim.lr"], best_pruned.data.params["seed"]) == \
        (best_full.data.params["optim.lr"], best_full.data.params["seed"])
    a, b = best_pruned.data.metrics["final_loss"], best_full.data.metrics["final_loss"]
    found = "the same job" if same else ("another job as good (a tie to 1e-6)" if abs(a - b) <= 1e-6 * abs(b)
                                         else "a WORSE job")
    lines.append(f"  halving: {saved} of {32 * steps} steps not trained ({saved / (32 * steps):.0%}); its best: "
                 f"{found} as the full sweep's best (final_loss {a:.6g} vs {b:.6g})")
    return lines


def main() -> None:
    quick = "--quick" in sys.argv
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        for name, base in SWEEPS.items():
            if quick and name.startswith("BMM"):
                continue
            for line in one_sweep(name, base, Path(tmp)):
                print(line, flush=True)


if __name__ == "__main__":
    main()
