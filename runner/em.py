"""inference=em: expectation-maximisation for mixture families with closed-form updates (GMM with
diagonal covariances, Bernoulli mixture), as one compiled program: restarts are a vmapped axis
over a `lax.scan` of EM iterations, and the restart with the best final average log-likelihood
is kept. Seed 003 fits MNIST this way; scikit-learn's GaussianMixture is the reference."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KEY_DERIVATION = "root=PRNGKey(seed); restart r initialises (k-means++ or random points) from split(root,R)[r]"


@dataclass
class EMResult:
    loglik: np.ndarray  # (R, iterations) average log-likelihood before each M-step (NaN once converged)
    final_loglik: np.ndarray  # (R,) average log-likelihood at each restart's final params
    best: int
    params: dict  # best restart's parameters, numpy
    responsibilities: np.ndarray  # (N, K) at the best restart's final params

    @property
    def assignments(self) -> np.ndarray:
        return self.responsibilities.argmax(-1)


def e_step(model, params, data):
    """(average log-likelihood, (N, K) responsibilities)."""
    import jax
    import jax.numpy as jnp

    data = model.em_data(data)
    log_joint = model.em_log_joint(params, data)
    ll = jax.scipy.special.logsumexp(log_joint, axis=-1)
    return ll.mean(), jnp.exp(log_joint - ll[:, None])


def kmeans_labels(key, X, K: int, iterations: int = 20):
    """k-means++ seeding, then Lloyd iterations: one-hot (N, K) labels (scikit-learn's default
    GaussianMixture initialisation, init_params="kmeans")."""
    import jax
    import jax.numpy as jnp

    X = X.reshape(X.shape[0], -1)
    sq = (X ** 2).sum(-1)

    def dist2(centers):
        return jnp.maximum(sq[:, None] - 2 * X @ centers.T + (centers ** 2).sum(-1)[None], 0.0)

    k_first, k_rest = jax.random.split(key)
    first = X[jax.random.randint(k_first, (), 0, X.shape[0])]
    centers = jnp.zeros((K, X.shape[1]), X.dtype).at[0].set(first)

    def seed(i, carry):
        centers, d2 = carry
        idx = jax.random.categorical(jax.random.fold_in(k_rest, i), jnp.log(d2 + 1e-30))
        centers = centers.at[i].set(X[idx])
        return centers, jnp.minimum(d2, ((X - X[idx]) ** 2).sum(-1))

    centers, _ = jax.lax.fori_loop(1, K, seed, (centers, ((X - first) ** 2).sum(-1)))

    def lloyd(centers, _):
        onehot = jax.nn.one_hot(dist2(centers).argmin(-1), K, dtype=X.dtype)
        counts = onehot.sum(0)[:, None]
        return jnp.where(counts > 0, onehot.T @ X / jnp.maximum(counts, 1), centers), None

    centers, _ = jax.lax.scan(lloyd, centers, None, length=iterations)
    return jax.nn.one_hot(dist2(centers).argmin(-1), K, dtype=X.dtype)


def make_program(model, restarts: int, iterations: int, reg: float, tol: float, init: str):
    """Each restart iterates until the average log-likelihood gains less than `tol` (scikit-learn's
    rule) or `iterations` are done; curves are NaN after a restart has converged."""
    import jax
    import jax.numpy as jnp

    from runner.fit import nan_argmin, shard_restarts

    def one_restart(key, data):
        if init == "kmeans":
            params = model.em_m_step(kmeans_labels(key, data, model.K), data, reg)
        else:
            params = model.em_init(key, data, reg)
        curve = jnp.full(iterations, jnp.nan, data.dtype)

        def not_done(state):
            i, _, curve = state
            gain = curve[i - 1] - curve[jnp.maximum(i - 2, 0)]
            return (i < iterations) & ((i < 2) | (jnp.abs(gain) >= tol))

        def iterate(state):
            i, params, curve = state
            ll, resp = e_step(model, params, data)
            return i + 1, model.em_m_step(resp, data, reg), curve.at[i].set(ll)

        _, params, curve = jax.lax.while_loop(not_done, iterate, (0, params, curve))
        final, _ = e_step(model, params, data)
        return params, curve, final

    def program(root, data):
        data = model.em_data(data)
        keys = shard_restarts(jax.random.split(root, restarts))
        params, curves, finals = jax.vmap(one_restart, (0, None))(keys, data)
        best = nan_argmin(-finals)
        best_params = jax.tree.map(lambda x: x[best], params)
        _, resp = e_step(model, best_params, data)
        return dict(loglik=curves, final_loglik=finals, best=best, params=best_params, resp=resp)

    return jax.jit(program)


def fit_em(exp) -> EMResult:
    import jax
    import jax.numpy as jnp

    inf = exp.inference
    program = make_program(exp.model, exp.restarts, inf["iterations"], inf["reg_covar"], inf["tol"], inf["init"])
    out = jax.tree.map(np.asarray, program(jax.random.PRNGKey(exp.seed), jax.tree.map(jnp.asarray, exp.data)))
    return EMResult(loglik=out["loglik"], final_loglik=out["final_loglik"], best=int(out["best"]),
                    params=out["params"], responsibilities=out["resp"])


def average_loglik(model, latents: dict, data) -> float:
    """The average log-likelihood of the data at a point estimate of the model's latent sites
    (an SVI or NUTS fit), on the same scale as EM's."""
    import jax
    import jax.numpy as jnp

    ll, _ = compiled_e_step(model, from_latents=True)({k: jnp.asarray(v) for k, v in latents.items()},
                                                     jax.tree.map(jnp.asarray, data))
    return float(ll)


def compiled_e_step(model, from_latents: bool = False):
    """`e_step` as one compiled program per model family and settings, taking EM's parameters or
    (`from_latents`) a point estimate of the latent sites. Op by op, a process's first call
    compiled every small op (~1 s)."""
    import jax

    from runner.posterior import model_program

    if from_latents:
        return model_program(model, ("e_step", "latents"),
                             lambda: jax.jit(lambda latents, data: e_step(model, model.em_params(latents), data)))
    return model_program(model, ("e_step", "params"), lambda: jax.jit(lambda params, data: e_step(model, params, data)))
