"""The same 20-trial Optuna search (runner/search.py) without and with pruning: the SVI steps run
and the best value found. Runs `python -m runner -m hydra/sweeper=optuna ...` twice in a
temporary folder, each into its own sqlite study and MLflow store, and reads the studies.

    python benchmarks/search_pruning.py [n_trials] [sampler]

With the random sampler (the default) both searches try the same 20 configurations, so the
difference is the pruner's alone: the steps it saved, and whether it stopped the best trial.
"""
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEPS = 1000
SEARCH = ["model=coin", "guide=autonormal", f"steps={STEPS}", "progress=false",
          "optim.lr=tag(log, interval(0.0001, 0.1))", "hydra.sweeper.sampler.seed=0"]


def search(folder: Path, pruner: str, n_trials: int, sampler: str) -> dict:
    import optuna

    storage = f"sqlite:///{folder}/optuna-{pruner}.db"
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "runner", "-m", "hydra/sweeper=optuna", f"hydra/sweeper/pruner={pruner}",
                           f"hydra/sweeper/sampler={sampler}", f"hydra.sweeper.storage={storage}",
                           f"hydra.sweeper.n_trials={n_trials}", f"tracking.uri=sqlite:///{folder}/mlflow-{pruner}.db",
                           f"hydra.sweep.dir={folder}/multirun-{pruner}", *SEARCH],
                          cwd=folder, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    steps = sum(max(t.intermediate_values) if t in pruned else STEPS for t in study.trials)
    return {"steps": steps, "pruned": len(pruned), "best": study.best_value, "best_trial": study.best_trial.number,
            "seconds": seconds, "trials": len(study.trials)}


def main() -> None:
    n_trials = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    sampler = sys.argv[2] if len(sys.argv) > 2 else "random"
    with tempfile.TemporaryDirectory() as d:
        plain = search(Path(d), "none", n_trials, sampler)
        pruned = search(Path(d), "median", n_trials, sampler)
    print(f"{n_trials} trials, sampler={sampler}, {' '.join(SEARCH)}")
    for name, r in (("no pruning", plain), ("median pruner", pruned)):
        print(f"  {name:14s}: {r['steps']:6d} SVI steps, {r['pruned']:2d} pruned, best {r['best']:.6g} "
              f"(trial {r['best_trial']}), {r['seconds']:.0f} s")
    print(f"  steps with pruning / without: {pruned['steps'] / plain['steps']:.2f}; "
          f"best with / without: {pruned['best']:.6g} / {plain['best']:.6g}; "
          f"time with / without: {pruned['seconds'] / plain['seconds']:.2f}")


if __name__ == "__main__":
    main()
