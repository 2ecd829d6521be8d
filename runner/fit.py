"""parts -> results: the whole fit is one compiled JAX program.

Restarts are a leading array axis (`jax.vmap`) over a `jax.lax.scan` of optimizer steps; the
per-step loss and per-parameter gradient norms come out of the scan as arrays. With
`select=initial` (the GMM tutorial's rule) every restart is initialised and scored, and only the
best by initial loss is trained; with `select=final` all are trained and the best final loss wins.
Selection, training and the guide samples for the figures all happen inside the same program.

Key derivation (logged as a param): root = PRNGKey(seed); k_init, k_train = split(root);
restart r initialises from split(k_init, R)[r] (split again into init-values and guide-param keys)
and trains with step keys split(fold_in(k_train, r), steps).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

KEY_DERIVATION = (
    "root=PRNGKey(seed); k_init,k_train=split(root); restart r: "
    "k_values,k_params=split(split(k_init,R)[r]); step keys=split(fold_in(k_train,r),steps)"
)
FIGURE_SAMPLES = 2000


@dataclass
class FitResult:
    initial_losses: np.ndarray  # (R,) loss of every restart at its initial params
    trained: np.ndarray  # (T,) restart indices that were trained (T = 1 or R)
    losses: np.ndarray  # (T, steps) loss per step of each trained restart
    grad_norms: dict  # param name -> (T, steps) L2 norm of the unconstrained gradient
    final_losses: np.ndarray  # (T,)
    best: int  # index of the selected restart among all R
    params: dict  # selected restart's guide params, constrained, numpy
    samples: dict  # guide samples of the selected restart (for figures)
    deterministic: bool

    @property
    def best_row(self) -> int:
        return int(np.flatnonzero(self.trained == self.best)[0])

    @property
    def final_loss(self) -> float:
        return float(self.final_losses[self.best_row])

    @property
    def initial_loss(self) -> float:
        return float(self.initial_losses[self.best])


def final_loss(losses, deterministic: bool):
    """Last step for deterministic objectives; mean of the last 10% of steps otherwise."""
    import jax.numpy as jnp

    if deterministic:
        return losses[..., -1]
    tail = max(1, math.ceil(0.1 * losses.shape[-1]))
    return jnp.mean(losses[..., -tail:], axis=-1)


def make_program(exp):
    """A jitted function (root_key, data) -> dict of arrays for the experiment `exp`."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer import SVI, Predictive
    from numpyro.optim import Adam

    model, elbo, opt = exp.model, exp.loss, exp.optimizer
    R, steps, select, det = exp.restarts, exp.steps, exp.select, exp.deterministic

    def setup(key, data):
        """Fresh guide per restart (NumPyro autoguides cache their prototype; issue 1753)."""
        args = () if data is None else (data,)
        k_values, k_params = jax.random.split(key)
        init_values = model.init_values(k_values, data) if data is not None else None
        guide = exp.guide_builder(model, init_values)
        svi = SVI(model, guide, Adam(1e-3), elbo)  # SVI only initialises; our step is optimizer.step
        state = svi.init(k_params, *args)
        params = svi.optim.get_params(state.optim_state)

        def loss_fn(p, k):
            return elbo.loss(k, svi.constrain_fn(p), model, guide, *args)

        return guide, svi.constrain_fn, params, loss_fn

    def train(params, loss_fn, train_key):
        def body(carry, k):
            p, s = carry
            p, s, loss, grads = opt.step(p, s, loss_fn, k)
            norms = {n: jnp.linalg.norm(jnp.ravel(g)) for n, g in grads.items()}
            return (p, s), (loss, norms)

        carry = (params, opt.init(params, loss_fn))
        (params, _), (losses, norms) = jax.lax.scan(body, carry, jax.random.split(train_key, steps))
        return params, losses, norms

    def program(roots, data):
        """roots: (N, key) for N replicate experiments. Their restarts are flattened into one
        (N*R) axis, so N replicates compile to the same program shape as one run."""
        N = roots.shape[0]
        k_init, k_train = jax.vmap(jax.random.split)(roots).transpose(1, 0, 2)
        keys = jax.vmap(lambda k: jax.random.split(k, R))(k_init).reshape(N * R, -1)
        train_keys = jax.vmap(lambda k: jax.vmap(jax.random.fold_in, (None, 0))(k, jnp.arange(R)))(k_train)
        keys, train_keys = shard_restarts(keys), shard_restarts(train_keys.reshape(N * R, -1))
        # Per-restart initial params need a fresh guide each (vmapped); the loss, the training and
        # the samples use one template guide: a guide's params do not depend on its init values.
        init_params = jax.vmap(lambda k: setup(k, data)[2])(keys)
        guide, constrain, _, loss_fn = setup(keys[0], data)
        first_keys = jax.vmap(lambda k: jax.random.split(k, steps)[0])(train_keys)
        init_losses = jax.vmap(loss_fn)(init_params, first_keys).reshape(N, R)
        rows = jnp.arange(N)

        def per_replicate(x):
            return x.reshape(N, R, *x.shape[1:])

        if select == "initial":
            best = nan_argmin(init_losses)  # (N,)
            trained = best[:, None]
            start = jax.tree.map(lambda x: per_replicate(x)[rows, best], init_params)
            tkeys = per_replicate(train_keys)[rows, best]
            params, losses, norms = jax.tree.map(
                lambda x: x[:, None], jax.vmap(train, (0, None, 0))(start, loss_fn, tkeys))
            col = jnp.zeros(N, dtype=int)
        else:
            trained = jnp.broadcast_to(jnp.arange(R), (N, R))
            flat = jax.vmap(train, (0, None, 0))(init_params, loss_fn, train_keys)
            params, losses, norms = jax.tree.map(per_replicate, flat)
        finals = final_loss(losses, det)  # (N, T)
        if select == "final":
            col = best = nan_argmin(finals)
        best_params = jax.vmap(constrain)(jax.tree.map(lambda x: x[rows, col], params))
        args = () if data is None else (data,)
        samples = jax.vmap(lambda p, k: Predictive(guide, params=p, num_samples=FIGURE_SAMPLES)(k, *args))(
            best_params, jax.vmap(jax.random.fold_in, (0, None))(roots, 1))
        return dict(initial_losses=init_losses, trained=trained, losses=losses, grad_norms=norms,
                    final_losses=finals, best=best, params=best_params, samples=samples)

    return jax.jit(program)


def nan_argmin(x):
    """argmin over the last axis, NaN counted as +inf."""
    import jax.numpy as jnp

    return jnp.argmin(jnp.where(jnp.isnan(x), jnp.inf, x), axis=-1)


def shard_restarts(x):
    """Spread the restart axis over every visible device (GPUs, or host devices forced with
    XLA_FLAGS=--xla_force_host_platform_device_count=N); a no-op on one device or when the
    restarts do not divide evenly."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.devices()
    if len(devices) == 1 or x.shape[0] % len(devices):
        return x
    mesh = Mesh(np.array(devices), ("restarts",))
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec("restarts")))


def fit(exp) -> list[FitResult]:
    """One FitResult per replicate (seed, seed+1, ..., seed+replicates-1); one compiled program."""
    import jax
    import jax.numpy as jnp

    program = make_program(exp)
    roots = jnp.stack([jax.random.PRNGKey(exp.seed + i) for i in range(exp.replicates)])
    batched = jax.tree.map(np.asarray, jax.device_get(program(roots, exp.data)))
    results = []
    for i in range(exp.replicates):
        out = jax.tree.map(lambda x: x[i], batched)
        results.append(FitResult(
            initial_losses=out["initial_losses"], trained=out["trained"], losses=out["losses"],
            grad_norms=out["grad_norms"], final_losses=out["final_losses"], best=int(out["best"]),
            params=out["params"], samples=out["samples"], deterministic=exp.deterministic))
    return results
