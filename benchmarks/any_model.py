"""Any NumPyro model as its author wrote it, through runner's CLI (issue 24's yardstick).

NumPyro's own examples (examples/numpyro_examples/*.py, copied verbatim) and posteriordb
posteriors (examples/numpyro_examples/posteriordb_models.py, NumPyro equivalents of the Stan
models), each run as a user runs it:

    cd examples/numpyro_examples && python -m runner model=fn model.fn=ucbadmit.glmm \
        data=json data.path=data/ucbadmit.json inference=nuts tracking=none

and compared with the truth in benchmarks/any_model_reference.json (analytic, posteriordb's
reference draws, or a long plain-NumPyro NUTS run: benchmarks/any_model_reference.py made it),
side by side with plain NumPyro NUTS at NumPyro's defaults (4 chains, 1000 warmup, 1000 draws) on
the same data. The deviation is max over every element of every reference site of
|mean - ref mean| / ref sd.

    python benchmarks/any_model.py                 # every case
    python benchmarks/any_model.py funnel ucbadmit_glmm
    python benchmarks/any_model.py --list

Not a test (tests/e2e/test_any_model.py asserts a subset).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "examples" / "numpyro_examples"
REFERENCE = Path(__file__).resolve().parent / "any_model_reference.json"
TOLERANCE = 0.2  # in reference sds


@dataclass(frozen=True)
class Case:
    name: str
    fn: str                    # module.function in examples/numpyro_examples
    data: str | None           # data/<file> (json or npz), None: data=none
    truth: str                 # analytic | posteriordb:<posterior> | numpyro (long plain NUTS)
    x64: bool = False          # needs float64
    overrides: tuple = field(default=())

    def data_overrides(self) -> list[str]:
        if self.data is None:
            return ["data=none"]
        kind = "npz" if self.data.endswith(".npz") else "json"
        return [f"data={kind}", f"data.path={self.data}"]


CASES = [
    # NumPyro's examples/ (0b935d48)
    Case("funnel", "funnel.model", None, "analytic"),
    Case("funnel_dim_json", "funnel.model", "data/funnel.json", "analytic"),
    Case("funnel_reparam", "funnel.reparam_model", None, "analytic"),
    Case("ucbadmit_glmm", "ucbadmit.glmm", "data/ucbadmit.json", "numpyro"),
    Case("annotation_multinomial", "annotation.multinomial", "data/annotation.json", "numpyro"),
    Case("annotation_dawid_skene", "annotation.dawid_skene", "data/annotation.json", "numpyro"),
    Case("baseball_fully_pooled", "baseball.fully_pooled", "data/baseball.json", "numpyro"),
    Case("baseball_not_pooled", "baseball.not_pooled", "data/baseball.json", "numpyro"),
    Case("baseball_partially_pooled", "baseball.partially_pooled", "data/baseball.json", "numpyro"),
    Case("baseball_logit", "baseball.partially_pooled_with_logit", "data/baseball.json", "numpyro"),
    Case("proportion_test", "proportion_test.model", "data/proportion_test.npz", "numpyro"),
    Case("zero_inflated_poisson", "zero_inflated_poisson.model", "data/zip.json", "numpyro"),
    Case("ar2_scan", "ar2.ar2_scan", "data/ar2.json", "numpyro"),
    # issue 24's small cases (not NumPyro examples)
    Case("binomial", "small.binomial", "data/binomial.json", "analytic"),
    Case("prior_only", "small.prior_only", None, "analytic"),
    # posteriordb (28f8d3d6): its data files as they are, its reference draws
    Case("earnings-earn_height", "posteriordb_models.earn_height", "data/earnings.json",
         "posteriordb:earnings-earn_height"),
    Case("kidiq-kidscore_momiq", "posteriordb_models.kidscore_momiq", "data/kidiq.json",
         "posteriordb:kidiq-kidscore_momiq"),
    Case("mesquite-logmesquite", "posteriordb_models.logmesquite", "data/mesquite.json",
         "posteriordb:mesquite-logmesquite"),
    Case("eight_schools-eight_schools_noncentered", "posteriordb_models.eight_schools_noncentered",
         "data/eight_schools.json", "posteriordb:eight_schools-eight_schools_noncentered"),
    Case("gp_pois_regr-gp_pois_regr", "posteriordb_models.gp_pois_regr", "data/gp_pois_regr.json",
         "posteriordb:gp_pois_regr-gp_pois_regr", x64=True),
]
BY_NAME = {c.name: c for c in CASES}


# --- the data as plain NumPyro gets them (as runner's data=json|npz reads them) -------------------

def load_data(case: Case) -> dict:
    """Named arrays (concrete jax arrays) and scalars (Python numbers), only the keys the function takes."""
    import inspect

    if case.data is None:
        return {}
    p = PROJECT / case.data
    if p.suffix == ".npz":
        with np.load(p) as z:
            raw = {k: z[k] for k in z.files}
    else:
        raw = {k: (np.asarray(v) if isinstance(v, list) else v) for k, v in json.loads(p.read_text()).items()}
    params = inspect.signature(model_function(case)).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        raw = {k: v for k, v in raw.items() if k in params}
    import jax.numpy as jnp  # as the examples pass them (ar2 and proportion_test index and .dot them with tracers)

    return {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in raw.items()}


def model_function(case: Case):
    import importlib

    if str(PROJECT) not in sys.path:
        sys.path.insert(0, str(PROJECT))
    module, name = case.fn.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


# --- the comparison -------------------------------------------------------------------------------

def deviation(means: dict, reference: dict) -> tuple[float, str]:
    """max |mean - ref mean| / ref sd over every element of every reference site, and where.
    A reference site the run lacks is an infinite deviation. Elements the reference holds
    constant (sd 0: the [0, 0] of a Cholesky factor) are left out."""
    worst, where = 0.0, ""
    for site, ref in reference.items():
        if site not in means:
            return float("inf"), f"{site} missing"
        mu, ref_mu, ref_sd = (np.asarray(x, dtype=float).ravel() for x in (means[site], ref["mean"], ref["sd"]))
        if mu.shape != ref_mu.shape:
            return float("inf"), f"{site} shape {mu.shape} != {ref_mu.shape}"
        keep = ref_sd > 1e-9 * (1 + np.abs(ref_mu))
        if not keep.any():
            continue
        dev = np.abs(mu - ref_mu)[keep] / ref_sd[keep]
        if not np.all(np.isfinite(dev)):
            return float("inf"), f"{site} not finite"
        i = int(np.argmax(dev))
        if dev[i] > worst:
            worst, where = float(dev[i]), site + (f"[{int(np.flatnonzero(keep)[i])}]" if mu.size > 1 else "")
    return worst, where


def sd_ratio(sds: dict, reference: dict) -> float:
    """max |log(sd / ref sd)| over the reference sites' elements the run has: a posterior too
    narrow (a funnel's neck never reached) has means close to the truth and this far from 0."""
    worst = 0.0
    for site, ref in reference.items():
        if site not in sds:
            continue
        sd, ref_mu, ref_sd = (np.asarray(x, dtype=float).ravel() for x in (sds[site], ref["mean"], ref["sd"]))
        keep = (ref_sd > 1e-9 * (1 + np.abs(ref_mu))) & (sd.shape == ref_sd.shape)
        if keep.any():
            worst = max(worst, float(np.max(np.abs(np.log(sd[keep] / ref_sd[keep])))))
    return worst


def reference() -> dict:
    return json.loads(REFERENCE.read_text())


# --- runner, as a user runs it --------------------------------------------------------------------

def runner_env(x64: bool) -> dict:
    """This checkout's runner (the venv may hold another one installed in editable mode)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    if x64 and not has_x64_key():
        env["JAX_ENABLE_X64"] = "1"  # until runner has its own key
    return env


def has_x64_key() -> bool:
    return "x64" in (ROOT / "runner" / "conf" / "config.yaml").read_text()


def runner_command(case: Case, run_dir: Path, extra=()) -> list[str]:
    x64 = ["jax.x64=true"] if case.x64 and has_x64_key() else []
    return [sys.executable, "-m", "runner", "model=fn", f"model.fn={case.fn}", *case.data_overrides(),
            "inference=nuts", "tracking=none", "progress=false", f"hydra.run.dir={run_dir}",
            *x64, *case.overrides, *extra]


@dataclass
class RunnerResult:
    ran: bool
    seconds: float
    means: dict
    sds: dict
    line: str          # runner's result line (or the error's last line)
    verdict: str       # what runner says of its draws (trust / do not trust / ?)
    run_dir: Path
    returncode: int


def run_runner(case: Case, workdir: Path, extra=(), timeout=900) -> RunnerResult:
    run_dir = workdir / case.name
    cmd = runner_command(case, run_dir, extra)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=PROJECT, env=runner_env(case.x64), capture_output=True, text=True,
                          timeout=timeout)
    seconds = time.perf_counter() - t0
    out = (proc.stdout + proc.stderr).strip().splitlines()
    lines = [l for l in out if l.startswith("runner:")]
    line = lines[-1] if lines else (out[-1] if out else "")
    summary = run_dir / "summary.json"
    if proc.returncode != 0 or not summary.exists():
        return RunnerResult(False, seconds, {}, {}, line, "", run_dir, proc.returncode)
    stats = json.loads(summary.read_text())
    means, sds = {k: v["mean"] for k, v in stats.items()}, {k: v["std"] for k, v in stats.items()}
    return RunnerResult(True, seconds, means, sds, line, verdict(proc.stdout + proc.stderr, run_dir), run_dir,
                        proc.returncode)


def verdict(text: str, run_dir: Path) -> str:
    """'do not trust' when runner says its draws cannot be trusted (its result line or
    nuts_verdict), 'trust' when it says nothing against them."""
    low = text.lower()
    tag = re.search(r"nuts_verdict[=: ]+(\S+)", low)
    if tag:
        return tag.group(1)
    if "not trust" in low or "cannot be trusted" in low or "untrusted" in low:
        return "do not trust"
    return "trust"


# --- plain NumPyro, the same defaults -------------------------------------------------------------

def plain_nuts(case: Case, chains=4, warmup=1000, samples=1000, seed=0) -> tuple[dict, float]:
    """NumPyro's NUTS with its defaults on the same data: (site -> mean, seconds)."""
    import jax
    from numpyro.infer import MCMC, NUTS

    fn, data = model_function(case), load_data(case)
    t0 = time.perf_counter()
    mcmc = MCMC(NUTS(fn), num_warmup=warmup, num_samples=samples, num_chains=chains,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), **data)
    draws = {k: np.asarray(v) for k, v in mcmc.get_samples().items()}
    return {k: v.mean(0) for k, v in draws.items()}, time.perf_counter() - t0


# --- the table ------------------------------------------------------------------------------------

def fmt(x: float) -> str:
    return "-" if np.isnan(x) else "inf" if not np.isfinite(x) else f"{x:.3f}"


def main(argv: list[str]) -> int:
    if "--list" in argv:
        print("\n".join(c.name for c in CASES))
        return 0
    names = [a for a in argv if not a.startswith("-")]
    cases = [BY_NAME[n] for n in names] if names else CASES
    ref = reference()
    rows = []
    header = ("model", "method", "ran", "seconds", "max|d|/sd", "where", "max|log sd/ref|", "runner says", "plain max|d|/sd",
              "plain s", "ok")
    print(" | ".join(header))
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            r = run_runner(case, Path(tmp))
            entry = ref.get(case.name)
            if entry is None:
                dev, where = float("nan"), "no reference"
            elif r.ran:
                dev, where = deviation(r.means, entry["sites"])
            else:
                dev, where = float("nan"), r.line[:160]
            plain = (entry or {}).get("plain_numpyro", {})
            plain_dev = plain.get("max_dev", float("nan"))
            ok = r.ran and (dev < TOLERANCE or "not" in r.verdict or not plain_dev < TOLERANCE)
            row = (case.name, "nuts", "yes" if r.ran else f"no (exit {r.returncode})", f"{r.seconds:.1f}",
                   fmt(dev), where, fmt(sd_ratio(r.sds, entry["sites"])) if r.ran and entry else "-",
                   r.verdict or "-", fmt(plain_dev), f"{plain.get('seconds', float('nan')):.1f}",
                   "ok" if ok else "FAIL")
            rows.append(row)
            print(" | ".join(row), flush=True)
            if not r.ran:
                print(f"    {r.line}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
