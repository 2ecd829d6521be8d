"""EM on scikit-learn's digits: runner's compiled EM against scikit-learn's GaussianMixture,
side by side in one process, same data, K=10, same number of initialisations R; then the same
digits fitted by SVI (Adam, seed 003's lr 1e-1) for the log-likelihood the UI compares.

    python benchmarks/em_digits.py        # or: make bench

runner's EM: k-means++ + Lloyd initialisation, up to 100 iterations, tol 1e-3 (scikit-learn's
defaults), R restarts vmapped in one program. Timed twice: the first call (trace + XLA compile
included) and the next call of the same program (another seed). scikit-learn: fit(X) with
n_init=R, init_params="kmeans", covariance_type="diag".
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def runner_em(R: int):
    """(seconds of the first call incl. trace + compile, seconds of a second call with another
    seed, best final average log-likelihood of the first call)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from runner.api import compose
    from runner.experiment import build
    from runner.inference.em import make_program

    cfg, _ = compose(["model=gmm", "data=digits", "model.K=10", "inference=em", f"restarts={R}",
                      "jax.cache_dir=null"])
    exp = build(cfg)
    inf = exp.inference
    program = make_program(exp.model, R, inf.iterations, inf.reg_covar, inf.tol, inf.init)
    X = jnp.asarray(exp.data)
    times = []
    for seed in (0, 1):
        t0 = time.perf_counter()
        out = jax.tree.map(np.asarray, program(jax.random.PRNGKey(seed), X))
        times.append(time.perf_counter() - t0)
        if seed == 0:
            ll = float(out["final_loglik"].max())
    return times[0], times[1], ll


def main():
    from sklearn.mixture import GaussianMixture

    from runner.data import digits

    X = digits()
    print(f"digits: {X.shape[0]} images x {X.shape[1]} pixels, K=10, diagonal covariances")
    print(f"{'R':>3} {'runner avg ll':>14} {'sklearn avg ll':>15} {'ll diff %':>9} {'runner 1st s':>12} "
          f"{'runner next s':>13} {'sklearn s':>9} {'runner next / sklearn':>21}")
    for R in (1, 4, 10):
        t_first, t_next, ll = runner_em(R)
        t0 = time.perf_counter()
        sk = GaussianMixture(10, covariance_type="diag", n_init=R, random_state=0).fit(X)
        t_sk = time.perf_counter() - t0
        ref = sk.score(X)
        print(f"{R:>3} {ll:>14.3f} {ref:>15.3f} {100 * (ll - ref) / abs(ref):>9.2f} {t_first:>12.2f} "
              f"{t_next:>13.2f} {t_sk:>9.2f} {t_next / t_sk:>21.2f}")

    # SVI (the GMM model with one shared diagonal scale) on the same digits, scored the same way
    from runner.api import fit_config
    from runner.models.mixtures import average_loglik
    from runner.posterior import latent_sites, point_estimate

    t0 = time.perf_counter()
    exp, res = fit_config(["model=gmm", "data=digits", "model.K=10", "model.scale=0.2", "restarts=4", "steps=500", "optim.lr=0.1",
                           "jax.cache_dir=null"])
    latents = point_estimate(res.samples, latent_sites(exp.model, exp.data))
    print(f"SVI (autodelta, Adam 0.1, 500 steps, 4 restarts; seed 003's fixed scale 0.2): avg ll "
          f"{average_loglik(exp.model, latents, exp.data):.3f} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
