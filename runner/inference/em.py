"""inference=em: expectation-maximisation for mixture families with closed-form updates (GMM with
diagonal covariances, Bernoulli mixture), as one compiled program: restarts are a vmapped axis
over a `lax.scan` of EM iterations, and the restart with the best final average log-likelihood
is kept. Seed 003 fits MNIST this way; scikit-learn's GaussianMixture is the reference."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runner import schema
from runner.errors import ConfigError
from runner.inference.base import FitOutput, Method
from runner.models.mixtures import e_step, em_data, supports

KEY_DERIVATION = "root=PRNGKey(seed); restart r initialises (k-means++ or random points) from split(root,R)[r]"


@dataclass
class EM(Method):
    """conf/inference/em.yaml: the settings of scikit-learn's GaussianMixture (ranges: runner/schema.py)."""
    name = "em"
    iterations: int = schema.setting(100, schema.positive_int)
    tol: float = schema.setting(1e-3, schema.number(0))
    reg_covar: float = schema.setting(1e-6, schema.number(0))
    init: str = schema.setting("kmeans", schema.one_of("kmeans", "random"))

    def prepare(self, cfg, model, data) -> None:
        if cfg.replicates != 1:
            raise ConfigError("replicates applies to inference=svi; for inference=em sweep seeds with -m seed=0,1,...")
        if not supports(model):
            raise ConfigError(f"inference=em has no updates for model '{model.name}': use model=gmm or "
                              "model=bmm, attach EM extras (runner.model_extras), or use inference=svi")
        K = getattr(model, "K", None)
        if not schema.positive_int.accepts(K):
            raise ConfigError(f"inference=em needs the number of components K of model '{model.name}' "
                              f"(a K in the data, or the function's K attribute), got {K!r}")
        em_data(model, data)
        if cfg.get("posterior", {}).get("samples", 0):
            raise ConfigError("posterior.samples needs a posterior: use inference=svi or inference=nuts "
                              "(EM gives a point estimate)")

    def fit(self, exp, context=None) -> FitOutput:
        return output(exp, fit_em(exp))

    def extras(self, exp, out: FitOutput, run_dir: Path) -> list[str]:
        return extra_files(exp, out.extras, run_dir)


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


def kmeans_labels(key, X, K: int, iterations: int = 300, tol: float = 1e-4):
    """scikit-learn's default GaussianMixture initialisation (init_params="kmeans": KMeans with
    n_init=1) as one compiled program: greedy k-means++ seeding (2 + log K candidates per centre,
    the one that lowers the potential most kept), then Lloyd iterations until the centres move
    less than `tol` x the data's mean variance (scikit-learn's rule) or `iterations`. Distances
    are matrix products (N x K). Returns one-hot (N, K) labels."""
    import math

    import jax
    import jax.numpy as jnp

    X = jnp.asarray(X).reshape(X.shape[0], -1)
    sq = (X ** 2).sum(-1)
    trials = 2 + int(math.log(K))

    def dist2(centers):
        return jnp.maximum(sq[:, None] - 2 * X @ centers.T + (centers ** 2).sum(-1)[None], 0.0)

    k_first, k_rest = jax.random.split(key)
    first = X[jax.random.randint(k_first, (), 0, X.shape[0])]
    centers = jnp.zeros((K, X.shape[1]), X.dtype).at[0].set(first)

    def seed(i, carry):
        centers, d2 = carry
        idx = jax.random.categorical(jax.random.fold_in(k_rest, i), jnp.log(d2 + 1e-30), shape=(trials,))
        cand = jnp.minimum(d2[None], dist2(X[idx]).T)  # (trials, N): the potential with each candidate
        best = jnp.argmin(cand.sum(-1))
        return centers.at[i].set(X[idx[best]]), cand[best]

    centers, _ = jax.lax.fori_loop(1, K, seed, (centers, jnp.maximum(dist2(first[None])[:, 0], 0.0)))
    threshold = tol * jnp.mean(jnp.var(X, axis=0))

    def assign(centers):
        return jax.nn.one_hot(dist2(centers).argmin(-1), K, dtype=X.dtype)

    def lloyd(state):
        i, centers, _ = state
        onehot = assign(centers)
        counts = onehot.sum(0)[:, None]
        new = jnp.where(counts > 0, onehot.T @ X / jnp.maximum(counts, 1), centers)
        return i + 1, new, jnp.sum((new - centers) ** 2)

    _, centers, _ = jax.lax.while_loop(lambda s: (s[0] < iterations) & (s[2] > threshold), lloyd,
                                       (0, centers, jnp.asarray(jnp.inf, X.dtype)))
    return assign(centers)


def make_program(model, restarts: int, iterations: int, reg: float, tol: float, init: str):
    """Each restart iterates until the average log-likelihood gains less than `tol` (scikit-learn's
    rule) or `iterations` are done; curves are NaN after a restart has converged."""
    import jax
    import jax.numpy as jnp

    from runner.inference.restarts import nan_argmin, shard_restarts

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
        data = em_data(model, data)
        keys = shard_restarts(jax.random.split(root, restarts))
        params, curves, finals = jax.vmap(one_restart, (0, None))(keys, data)
        best = nan_argmin(-finals)
        best_params = jax.tree.map(lambda x: x[best], params)
        _, resp = e_step(model, best_params, data)
        return dict(loglik=curves, final_loglik=finals, best=best, params=best_params, resp=resp)

    return jax.jit(program)


def fit_em(exp) -> EMResult:
    import functools

    import jax

    from runner.inference import program_cache
    from runner.inference.budget import compile_within_budget
    from runner.inference.restarts import root_key

    em = exp.inference
    program = make_program(exp.model, exp.restarts, em.iterations, em.reg_covar, em.tol, em.init)
    key, data = root_key(exp.seed), program_cache.on_device(exp.data)
    # compiled ahead of time and checked against the memory there is before anything is allocated
    kept = functools.partial(program_cache.compiled, program_cache.for_experiment(exp), "em")
    compiled = compile_within_budget(program, key, data, what="the fit", hint="fewer restarts, or less data (data.n)",
                                     kept=kept)
    out = jax.tree.map(np.asarray, compiled(key, data))
    return EMResult(loglik=out["loglik"], final_loglik=out["final_loglik"], best=int(out["best"]),
                    params=out["params"], responsibilities=out["resp"])


def output(exp, res: EMResult) -> FitOutput:
    """EM's fit as every method's: its parameters (not the model's sites: no draws), the best
    restart's average log-likelihood per iteration, each point's assignment."""
    from runner import posterior

    curve = res.loglik[res.best]
    curve = curve[np.isfinite(curve)]
    finals = res.final_loglik
    final = float(finals[res.best])
    scalars = {"avg_loglik": final, "final_loss": -final, "best_restart": res.best,
               "iterations": len(curve), "avg_loglik_min": float(np.nanmin(finals)),
               "avg_loglik_median": float(np.nanmedian(finals)), "avg_loglik_max": float(np.nanmax(finals)),
               "restarts_converged": int(np.isnan(res.loglik[:, -1]).sum())}
    sites = posterior.enumerated_sites(exp.model, exp.data)  # (K=1 has no assignment site)
    return FitOutput(method="em", scalars=scalars, curves={"loglik": curve.tolist()}, params=res.params,
                     assignments={sites[0] if sites else "assignment": res.assignments},
                     line=f"avg_loglik={final:.6g} best_restart={res.best}/{exp.restarts} iterations={len(curve)}",
                     key_derivation=KEY_DERIVATION, extras=res)


def extra_files(exp, res: EMResult, run_dir: Path) -> list[str]:
    """Every restart's log-likelihood curve, the components as images (image data), and
    inference_data.nc of the point estimate."""
    from runner import figures

    files = []
    if figures.curves_plot(res.loglik, res.best, run_dir / "plots" / "loglik.png", "average log-likelihood",
                           f"EM, {exp.restarts} restart(s)"):
        files.append("plots/loglik.png")
    X = np.asarray(em_data(exp.model, exp.data))
    if X.ndim > 1:
        from runner.models.drawing import image_side

        if image_side(X.shape[-1]):
            one = {k: np.asarray(v)[None] for k, v in res.params.items()}
            if figures.components_plot(exp.model, {**one, "scale": np.sqrt(one.get("variances", 1.0))},
                                       X, run_dir / "plots" / "components.png"):
                files.append("plots/components.png")
    return files + arviz_file(exp, res, run_dir)


def arviz_file(exp, res: EMResult, run_dir: Path) -> list[str]:
    """inference_data.nc of EM's point estimate: its parameters (per-component variances: not
    the SVI model's sites) and the log-likelihood of each data point under them."""
    import jax

    from runner import inference_data, posterior
    from runner.inference import program_cache

    sites = posterior.observed_sites(exp.model, exp.data)
    if len(sites) != 1:
        return []
    X = program_cache.on_device(np.asarray(em_data(exp.model, exp.data)))
    # one compiled program (op by op, each small op compiled on its own: ~1 s of every EM run)
    loglik = jax.jit(lambda params, X: jax.nn.logsumexp(exp.model.em_log_joint(params, X), axis=-1))
    ll = program_cache.run(program_cache.for_experiment(exp), "em_log_likelihood", loglik,
                           program_cache.on_device(dict(res.params)), X)
    return inference_data.write(exp, run_dir, {k: np.asarray(v)[None] for k, v in res.params.items()},
                                point_loglik={sites[0]: np.asarray(ll)})
