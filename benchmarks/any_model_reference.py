"""Makes benchmarks/any_model_reference.json: for each case of benchmarks/any_model.py, the truth
(per site: mean and sd of every element) and plain NumPyro's own result at NumPyro's NUTS
defaults (4 vectorised chains, 1000 warmup, 1000 draws, seed 0) on the same data: its max
|mean - ref| / sd and seconds.

The truth is, by case:
  analytic      the funnel's marginals (y ~ N(0, 3), x_i with mean 0 and sd exp(9/4)), the
                binomial's Beta(k + 1, n - k + 1), the prior-only model's prior;
  posteriordb   its reference draws (10 chains x 1000), read from a posteriordb git mirror
                (--posteriordb /path/to/stan-dev+posteriordb/repo, commit 28f8d3d6);
  numpyro       a long plain-NumPyro NUTS run: 4 chains x (1000 warmup + 5000 draws), seed 1.

    python benchmarks/any_model_reference.py --posteriordb /work/.mirror/stan-dev+posteriordb/repo
    python benchmarks/any_model_reference.py ucbadmit_glmm      # redo some cases, keep the others

Each case runs in its own process (float64 for the cases that need it).
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import any_model  # noqa: E402

LONG = dict(chains=4, warmup=1000, samples=5000, seed=1)


def analytic(name: str) -> dict:
    if name in ("funnel", "funnel_dim_json", "funnel_reparam"):
        return {"y": {"mean": 0.0, "sd": 3.0},
                "x": {"mean": [0.0] * 9, "sd": [math.exp(9 / 4)] * 9}}  # Var x = E exp(y) = exp(9/2)
    if name == "binomial":
        a, b = 12 + 1, 20 - 12 + 1
        return {"p": {"mean": a / (a + b), "sd": math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))}}
    if name == "prior_only":
        return {"mu": {"mean": 1.0, "sd": 2.0},
                "s": {"mean": math.sqrt(2 / math.pi), "sd": math.sqrt(1 - 2 / math.pi)}}
    raise KeyError(name)


def posteriordb(posterior: str, mirror: Path) -> dict:
    """posteriordb's reference draws -> per site (Stan's `beta[2]` is element 1 of `beta`)."""
    blob = subprocess.run(["git", "--git-dir", str(mirror / ".git") if (mirror / ".git").exists() else str(mirror),
                           "show", f"HEAD:posterior_database/reference_posteriors/draws/draws/{posterior}.json.zip"],
                          capture_output=True, check=True).stdout
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        chains = json.loads(z.read(z.namelist()[0]))
    flat = {k: np.concatenate([np.asarray(c[k], dtype=float) for c in chains]) for k in chains[0]}
    sites: dict = {}
    for key, x in flat.items():
        m = re.fullmatch(r"(\w+)(?:\[(\d+)\])?", key)
        name, idx = m.group(1), m.group(2)
        sites.setdefault(name, {})[int(idx) - 1 if idx else None] = (x.mean(), x.std(ddof=1))
    out = {}
    for name, elems in sites.items():
        if None in elems:
            out[name] = {"mean": float(elems[None][0]), "sd": float(elems[None][1])}
        else:
            order = sorted(elems)
            out[name] = {"mean": [float(elems[i][0]) for i in order], "sd": [float(elems[i][1]) for i in order]}
    return out


def long_numpyro(case) -> dict:
    import jax
    from numpyro.infer import MCMC, NUTS

    mcmc = MCMC(NUTS(any_model.model_function(case)), num_warmup=LONG["warmup"], num_samples=LONG["samples"],
                num_chains=LONG["chains"], chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(LONG["seed"]), **any_model.load_data(case))
    draws = {k: np.asarray(v, dtype=float) for k, v in mcmc.get_samples().items()}
    return {k: {"mean": v.mean(0).tolist(), "sd": v.std(0, ddof=1).tolist()} for k, v in draws.items()}


def one(name: str, mirror: str | None) -> dict:
    """This process's case: its truth and plain NumPyro's deviation from it."""
    case = any_model.BY_NAME[name]
    if case.x64:
        import jax

        jax.config.update("jax_enable_x64", True)
    if case.truth == "analytic":
        truth, source = analytic(name), "analytic"
    elif case.truth.startswith("posteriordb:"):
        posterior = case.truth.split(":", 1)[1]
        truth, source = posteriordb(posterior, Path(mirror)), f"posteriordb 28f8d3d6 reference draws {posterior}"
    else:
        t0 = time.perf_counter()
        truth = long_numpyro(case)
        source = (f"plain NumPyro NUTS {LONG['chains']} chains x ({LONG['warmup']} warmup + {LONG['samples']} "
                  f"draws), seed {LONG['seed']} ({time.perf_counter() - t0:.0f} s)")
    means, seconds = any_model.plain_nuts(case)
    dev, where = any_model.deviation(means, truth)
    return {"truth": source, "sites": truth,
            "plain_numpyro": {"chains": 4, "warmup": 1000, "samples": 1000, "seed": 0,
                              "max_dev": dev, "where": where, "seconds": round(seconds, 2)}}


def main(argv: list[str]) -> int:
    mirror = None
    if "--posteriordb" in argv:
        i = argv.index("--posteriordb")
        mirror = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    if argv and argv[0] == "--one":
        print(json.dumps(one(argv[1], mirror)))
        return 0
    names = argv or [c.name for c in any_model.CASES]
    out = json.loads(any_model.REFERENCE.read_text()) if any_model.REFERENCE.exists() else {}
    for name in names:
        case = any_model.BY_NAME[name]
        if case.truth.startswith("posteriordb:") and mirror is None:
            print(f"{name}: needs --posteriordb <mirror>; kept as it was", flush=True)
            continue
        cmd = [sys.executable, __file__, "--one", name] + (["--posteriordb", mirror] if mirror else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if proc.returncode != 0:
            print(f"{name}: FAILED\n{proc.stderr[-3000:]}", flush=True)
            continue
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        p = out[name]["plain_numpyro"]
        print(f"{name}: plain NumPyro max|d|/sd={p['max_dev']:.3f} ({p['where']}) in {p['seconds']} s; "
              f"truth: {out[name]['truth']}", flush=True)
        any_model.REFERENCE.write_text(json.dumps(out, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
