"""Restarts per second of the compiled fit (no MLflow, no plots): the GMM tutorial model with
select=final, so every restart is trained, at 10^2 .. 10^5 restarts. Run it where the GPU is:

    python benchmarks/restart_scaling.py 100 10000 100000
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(sizes):
    import jax

    from runner.api import compose
    from runner.experiment import build
    import jax.numpy as jnp

    from runner.inference.svi.program import make_programs

    print(f"devices: {jax.devices()}")
    for R in sizes:
        cfg, _ = compose(["model=gmm", "guide=autodelta", "select=final", f"restarts={R}", "jax.cache_dir=null"])
        exp = build(cfg)
        programs = make_programs(exp)
        data = jnp.asarray(exp.data)

        def call(seed):  # one replicate: roots of shape (1, key)
            return jax.block_until_ready(programs.run(jax.random.PRNGKey(seed)[None], data))

        t0 = time.perf_counter()
        call(0)  # trace + compile of prepare / advance / finish, then the fit
        t1 = time.perf_counter()
        out = call(1)
        t2 = time.perf_counter()
        print(f"restarts={R:>7}: first call (compile included) {t1 - t0:6.2f} s, "
              f"second call {t2 - t1:6.3f} s = {R / (t2 - t1):,.0f} restarts/s "
              f"({R * exp.inference.steps / (t2 - t1):,.0f} restart-steps/s), best final loss {float(out['final_losses'].min()):.4f}")

if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [100, 10000, 100000])
