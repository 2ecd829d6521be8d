"""check=sbc's cost, measured in one run: simulation-based calibration with S simulations of a
user's model (eight schools, non-centred: examples/my_project) against one fit of the same config,
and against the same S simulations fitted one at a time (the method's own fit per data set, in
this process, XLA's persistent cache warm: the most favourable way to fit them one by one; a
process per simulation adds the command's start, timed here once).

    python benchmarks/sbc.py                       # SVI, autonormal, 2000 steps, 200 simulations
    python benchmarks/sbc.py --methods nuts --sequential 20   # NUTS, 1 chain x (200 warmup + 200 draws)

Fitting a few hundred simulations one at a time in one process compiles a program each; once, after
~400 of them, LLVM ran out of code memory (`Cannot allocate memory`): run `--methods nuts` on its own.
Each time includes what a run pays: tracing, compiling (a fresh program: jax.cache_dir=null for the
one fit and the SBC), the fit, and for SBC the simulations, ranks and verdicts.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
EXAMPLE = ROOT / "examples" / "my_project"


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def svi_cases(args) -> tuple[list, str]:
    base = ["model=eight_schools", "guide=autonormal", f"steps={args.steps}", "diagnostics.psis_draws=0",
            "progress=false", "tracking=none"]
    return base, f"eight_schools autonormal steps={args.steps}"


def nuts_cases(args) -> tuple[list, str]:
    base = ["model=eight_schools", "inference=nuts", "inference.chains=1", "inference.warmup=200",
            "inference.samples=200", "progress=false", "tracking=none"]
    return base, "eight_schools nuts 1 chain x (200 warmup + 200 draws)"


def measure(base: list, what: str, args, cache: str) -> None:
    import dataclasses

    import runner
    from runner.check.sbc import one_at_a_time
    from runner.experiment import configure_jax
    from runner.inference import FitContext

    S = args.simulations
    one = runner.build(runner.compose([*base, "jax.cache_dir=null"], "conf")[0])
    configure_jax(None, one.x64)
    _, t_one = timed(lambda: runner.fit(one))
    sbc = runner.build(runner.compose([*base, "jax.cache_dir=null", "check=sbc", f"check.simulations={S}"], "conf")[0])
    out, t_sbc = timed(lambda: sbc.inference.fit(sbc))
    check = sbc.inference
    inner = dataclasses.replace(sbc, inference=check.method, cache_dir=cache)
    _, sims = check.simulator.draw(sbc.seed, S)
    n = min(args.sequential, S)
    configure_jax(cache, one.x64)
    first = dataclasses.replace(sims, count=1)
    one_at_a_time(inner, check.method, first, check.draws, FitContext())  # its compile, into the cache
    _, t_seq = timed(lambda: one_at_a_time(inner, check.method, dataclasses.replace(sims, count=n), check.draws,
                                           FitContext()))
    per = t_seq / n
    print(f"\n{what}, {S} simulations ({out.tags['sbc_fit']}); verdict: {out.tags['sbc_verdict']}")
    print(f"  one fit (compile included)            {t_one:8.2f} s")
    print(f"  SBC, {S} simulations in one run        {t_sbc:8.2f} s   = {t_sbc / t_one:.2f} x one fit")
    print(f"  one at a time, {n} of them (cache warm) {t_seq:8.2f} s   = {per:.3f} s per simulation"
          + ("" if n == S else f", {S} of them: {per * S:.1f} s (extrapolated)"))
    print(f"  SBC's one program is {per * S / t_sbc:.1f} x faster than fitting them one at a time")


def command_time(base: list) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "runner", "--config-dir", "conf", *base, "hydra.run.dir=" + tempfile.mkdtemp()],
                   cwd=EXAMPLE, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--simulations", type=int, default=200)
    parser.add_argument("--sequential", type=int, default=200, help="how many of them to fit one at a time")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--methods", default="svi", help="svi, nuts or svi,nuts")
    args = parser.parse_args()
    os.chdir(EXAMPLE)
    sys.path.insert(0, str(EXAMPLE))
    import jax

    print(f"devices: {jax.devices()}")
    cache = tempfile.mkdtemp(prefix="sbc-bench-cache-")
    for method in args.methods.split(","):
        base, what = {"svi": svi_cases, "nuts": nuts_cases}[method](args)
        measure(base, what, args, cache)
        t_cmd = command_time([*base, f"jax.cache_dir={cache}"])
        print(f"  a process per simulation: one command takes {t_cmd:.2f} s (cache warm), "
              f"{args.simulations} of them about {t_cmd * args.simulations:.0f} s")


if __name__ == "__main__":
    main()
