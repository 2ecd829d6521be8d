"""parts -> results: the fit is compiled JAX, with nothing per step or per restart in Python.

Restarts are a leading array axis (`jax.vmap`); steps are a `fori_loop` inside a jitted program.
The fit is three jitted functions: `prepare` (initialise and score every restart; with
`select=initial`, the GMM tutorial's rule, keep the best by initial loss), `advance` (run steps
[start, stop) of every trained restart; the bounds are traced, so any chunk runs the same
compiled program) and `finish` (final losses, the best restart, its guide samples for figures).
Without a progress display `advance` runs all steps in one call; with one it runs chunks of about
a quarter of a second and reports between them (runner/progress.py). Chunks change no number:
the same compiled step runs on the same state. No host callback is compiled into the program, so
XLA's persistent cache keeps working (JAX does not cache programs with host callbacks).

Key derivation (logged as a param): root = PRNGKey(seed); k_init, k_train = split(root);
restart r initialises from split(k_init, R)[r] (split again into init-values and guide-param keys)
and trains with step keys split(fold_in(k_train, r), steps).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from runner.inference.restarts import nan_argmin, shard_restarts

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


@dataclass
class Programs:
    prepare: Callable  # (roots, data) -> (carry, fixed)
    advance: Callable  # (carry, fixed, data, start, stop) -> (carry, best loss at stop-1)
    finish: Callable  # (carry, fixed, roots, data) -> dict of arrays, leading axis = replicate
    steps: int

    def run(self, roots, data, progress=None) -> dict:
        """The whole fit; with `progress` (runner.progress.Progress), in chunks of about
        `progress.chunk_s` seconds, reporting the best restart's loss after each."""
        carry, fixed = self.prepare(roots, data)
        if progress is None:
            carry, _ = self.advance(carry, fixed, data, 0, self.steps)
        else:
            start, chunk = 0, max(1, self.steps // 100)
            try:
                while start < self.steps:
                    stop = min(self.steps, start + chunk)
                    t = time.perf_counter()
                    carry, best = self.advance(carry, fixed, data, start, stop)
                    best = float(best)  # waits for the chunk
                    rate = (stop - start) / max(time.perf_counter() - t, 1e-9)
                    progress.update(stop, best)
                    start, chunk = stop, max(1, int(rate * progress.chunk_s))
            finally:  # also on Ctrl-C: end the terminal line
                progress.close()
        return self.finish(carry, fixed, roots, data)


def make_programs(exp) -> Programs:
    """The fit as three jitted functions for the experiment `exp` (see the module docstring)."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer import SVI
    from numpyro.optim import Adam

    method = exp.inference  # runner.inference.svi.SVI: the guide, loss, optimizer and settings
    model, elbo, opt = exp.model, method.loss, method.optimizer
    R, steps, select, det = exp.restarts, method.steps, method.select, method.deterministic

    def setup(key, data):
        """Fresh guide per restart (NumPyro autoguides cache their prototype; issue 1753)."""
        args = () if data is None else (data,)
        k_values, k_params = jax.random.split(key)
        guide = method.make_guide(model, data, k_values)
        svi = SVI(model, guide, Adam(1e-3), elbo)  # SVI only initialises; our step is optimizer.step
        state = svi.init(k_params, *args)
        params = svi.optim.get_params(state.optim_state)

        def loss_fn(p, k):
            return elbo.loss(k, svi.constrain_fn(p), model, guide, *args)

        return guide, svi.constrain_fn, params, loss_fn

    def prepare(roots, data):
        """roots: (N, key) for N replicate experiments. Their restarts are flattened into one
        (N*R) axis, so N replicates compile to the same program shape as one run.
        Returns (carry, fixed): what training updates, and what it only reads."""
        N = roots.shape[0]
        k_init, k_train = jax.vmap(jax.random.split)(roots).transpose(1, 0, 2)
        keys = jax.vmap(lambda k: jax.random.split(k, R))(k_init).reshape(N * R, -1)
        train_keys = jax.vmap(lambda k: jax.vmap(jax.random.fold_in, (None, 0))(k, jnp.arange(R)))(k_train)
        keys, train_keys = shard_restarts(keys), shard_restarts(train_keys.reshape(N * R, -1))
        # Per-restart initial params need a fresh guide each (vmapped); the loss, the training and
        # the samples use one template guide: a guide's params do not depend on its init values.
        init_params = jax.vmap(lambda k: setup(k, data)[2])(keys)
        _, _, _, loss_fn = setup(keys[0], data)
        first_keys = jax.vmap(lambda k: jax.random.split(k, steps)[0])(train_keys)
        init_losses = jax.vmap(loss_fn)(init_params, first_keys).reshape(N, R)
        rows = jnp.arange(N)
        fixed = dict(template_key=keys[0], initial_losses=init_losses)
        if select == "initial":  # train only the best-initialised restart of each replicate
            best = nan_argmin(init_losses)  # (N,)
            fixed.update(trained=best[:, None], best_initial=best)
            start = jax.tree.map(lambda x: x.reshape(N, R, *x.shape[1:])[rows, best], init_params)
            train_keys = train_keys.reshape(N, R, -1)[rows, best]
        else:
            fixed["trained"] = jnp.broadcast_to(jnp.arange(R), (N, R))
            start = init_params
        fixed["step_keys"] = jax.vmap(lambda k: jax.random.split(k, steps))(train_keys)  # (B, steps, key)
        B = train_keys.shape[0]
        carry = dict(params=start, opt_state=jax.vmap(lambda p: opt.init(p, loss_fn))(start),
                     losses=jnp.zeros((B, steps), init_losses.dtype),
                     grad_norms={n: jnp.zeros((B, steps), init_losses.dtype) for n in start})
        return carry, fixed

    def advance(carry, fixed, data, start, stop):
        """Steps [start, stop) for every trained restart (bounds are traced: one compile for any
        chunk). Returns the new carry and the best loss at step stop-1."""
        _, _, _, loss_fn = setup(fixed["template_key"], data)

        def one(p, s, k):
            p, s, loss, grads = opt.step(p, s, loss_fn, k)
            return p, s, loss, {n: grad_norm(g) for n, g in grads.items()}

        def body(i, c):
            k = jax.lax.dynamic_index_in_dim(fixed["step_keys"], i, axis=1, keepdims=False)
            p, s, loss, norms = jax.vmap(one)(c["params"], c["opt_state"], k)
            return dict(params=p, opt_state=s, losses=c["losses"].at[:, i].set(loss),
                        grad_norms={n: g.at[:, i].set(norms[n]) for n, g in c["grad_norms"].items()})

        carry = jax.lax.fori_loop(start, stop, body, carry)
        last = jax.lax.dynamic_index_in_dim(carry["losses"], stop - 1, axis=1, keepdims=False)
        return carry, jnp.nanmin(last)

    def finish(carry, fixed, roots, data):
        N = roots.shape[0]
        guide, constrain, _, _ = setup(fixed["template_key"], data)
        rows = jnp.arange(N)

        def per_replicate(x):
            return x.reshape(N, -1, *x.shape[1:])

        losses = per_replicate(carry["losses"])  # (N, T, steps)
        finals = final_loss(losses, det)  # (N, T)
        if select == "final":
            col = best = nan_argmin(finals)
        else:
            col, best = jnp.zeros(N, dtype=int), fixed["best_initial"]
        params = jax.tree.map(per_replicate, carry["params"])
        best_params = jax.vmap(constrain)(jax.tree.map(lambda x: x[rows, col], params))
        args = () if data is None else (data,)
        samples = jax.vmap(lambda p, k: guide_draws(guide, p, k, args, FIGURE_SAMPLES))(
            best_params, jax.vmap(jax.random.fold_in, (0, None))(roots, 1))
        return dict(initial_losses=fixed["initial_losses"], trained=fixed["trained"], losses=losses,
                    grad_norms=jax.tree.map(per_replicate, carry["grad_norms"]), final_losses=finals,
                    best=best, params=best_params, samples=samples)

    return Programs(prepare=jax.jit(prepare), advance=jax.jit(advance, donate_argnums=0),
                    finish=jax.jit(finish), steps=steps)


def grad_norm(g):
    """L2 norm of one param's gradient; a param may be a pytree (a flow guide's network weights)."""
    import jax
    import jax.numpy as jnp

    leaves = jax.tree.leaves(g)
    if len(leaves) == 1:
        return jnp.linalg.norm(jnp.ravel(leaves[0]))
    return jnp.sqrt(sum(jnp.sum(x ** 2) for x in leaves))


def guide_draws(guide, params, key, args, num: int) -> dict:
    """`num` draws of the latent sites from a fitted guide: NumPyro's `sample_posterior` for its
    autoguides (for AutoLaplaceApproximation that is the Laplace posterior, not the MAP point the
    fit optimises), the guide run by `Predictive` for a hand-written guide."""
    from numpyro.infer import Predictive
    from numpyro.infer.autoguide import AutoGuide

    if isinstance(guide, AutoGuide):
        if guide.prototype_trace is None:  # a fresh guide: trace the model once (its prototype)
            from numpyro import handlers

            with handlers.block(), handlers.seed(rng_seed=0):
                guide(*args)
        return guide.sample_posterior(key, params, *args, sample_shape=(num,))
    return Predictive(guide, params=params, num_samples=num)(key, *args)


def fit(exp, progress=None) -> list[FitResult]:
    """One FitResult per replicate (seed, seed+1, ..., seed+replicates-1), all restarts and
    replicates in the same compiled programs. `progress`: a runner.progress.Progress, or None."""
    import jax
    import jax.numpy as jnp

    replicates = exp.inference.replicates
    roots = jnp.stack([jax.random.PRNGKey(exp.seed + i) for i in range(replicates)])
    data = None if exp.data is None else jax.tree.map(jnp.asarray, exp.data)
    batched = jax.tree.map(np.asarray, jax.device_get(make_programs(exp).run(roots, data, progress)))
    results = []
    for i in range(replicates):
        out = jax.tree.map(lambda x: x[i], batched)
        results.append(FitResult(
            initial_losses=out["initial_losses"], trained=out["trained"], losses=out["losses"],
            grad_norms=out["grad_norms"], final_losses=out["final_losses"], best=int(out["best"]),
            params=out["params"], samples=out["samples"], deterministic=exp.inference.deterministic))
    return results
