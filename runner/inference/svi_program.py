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
and trains with step keys split(fold_in(k_train, r), steps), each computed at its step (the i-th
key of a split does not depend on how many are split), never stored.

Memory is bounded in restarts x steps: the program keeps each restart's curves (loss, gradient
norms) at `curve_points` evenly spaced steps (every step when steps <= curve_points) and running
summaries (the final loss's tail sum, the last loss, the first non-finite step), never a value
per step. Minibatches (`data.batch_size=B`): each step draws B rows of the data (without
replacement, from the step's key) and scales the sites of the data's plates by N/B, as NumPyro's
plate subsampling does; the final losses are then evaluated on the full data.
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
    losses: np.ndarray  # (T, P) loss of each trained restart at the steps `steps` (P <= curve_points)
    grad_norms: dict  # param name -> (T, P) L2 norm of the unconstrained gradient
    final_losses: np.ndarray  # (T,)
    best: int  # index of the selected restart among all R
    params: dict  # selected restart's guide params, constrained, numpy
    samples: dict  # guide samples of the selected restart (for figures)
    deterministic: bool
    steps: np.ndarray = None  # (P,) the step of each curve point: every step, or an even stride + the last
    failure_steps: np.ndarray = None  # (T,) first step whose loss was NaN/inf (the number of steps if none)

    @property
    def best_row(self) -> int:
        return int(np.flatnonzero(self.trained == self.best)[0])

    @property
    def final_loss(self) -> float:
        return float(self.final_losses[self.best_row])

    @property
    def initial_loss(self) -> float:
        return float(self.initial_losses[self.best])


def tail_length(steps: int) -> int:
    """The final loss of a stochastic objective is the mean of the last 10% of the steps."""
    return max(1, math.ceil(0.1 * steps))


def curve_steps(steps: int, points: int | None) -> np.ndarray:
    """The steps kept on the curves: every step when steps <= points (or no cap), otherwise an
    even stride and the last step (the same rule the tracking store uses)."""
    if not points or steps <= points:
        return np.arange(steps)
    stride = -(-steps // points)
    return np.array(sorted(set(range(0, steps, stride)) | {steps - 1}))


def nth_key(key, i):
    """split(key, n)[i] for any n > i, without the other n - 1 keys: with JAX's partitionable
    Threefry (the default) the i-th split key is the hash of the counter (0, i)."""
    import jax
    import jax.numpy as jnp
    from jax.extend.random import threefry_2x32

    if not jax.config.jax_threefry_partitionable:  # the older split: the n keys depend on n
        raise RuntimeError("runner needs jax_threefry_partitionable=True (JAX's default)")
    return threefry_2x32(key, jnp.stack([jnp.zeros((), jnp.uint32), jnp.asarray(i, jnp.uint32)]))


def scale_plates(model, plates: frozenset, factor: float):
    """The model with every sample site inside one of `plates` scaled by `factor` (N/B for a
    minibatch of B of the N rows): NumPyro's plate subsampling, from outside the model."""
    from numpyro.primitives import Messenger

    class ScalePlates(Messenger):
        def process_message(self, msg):
            if msg["type"] == "sample" and any(f.name in plates for f in msg["cond_indep_stack"]):
                msg["scale"] = factor if msg.get("scale") is None else factor * msg["scale"]

    return ScalePlates(model)


@dataclass
class Programs:
    prepare: Callable  # (roots, data) -> (carry, fixed)
    advance: Callable  # (carry, fixed, data, start, stop) -> (carry, best loss at stop-1)
    finish: Callable  # (carry, fixed, roots, data) -> dict of arrays, leading axis = replicate
    steps: int
    curve_steps: np.ndarray = None  # the steps kept on the curves

    def run(self, roots, data, progress=None) -> dict:
        """The whole fit; with `progress` (runner.progress.Progress), in chunks of about
        `progress.chunk_s` seconds, reporting the best restart's loss after each."""
        import jax

        from runner.inference.budget import compile_within_budget

        carry_shape, fixed_shape = jax.eval_shape(self.prepare, roots, data)  # nothing allocated yet
        advance = compile_within_budget(
            self.advance, carry_shape, fixed_shape, data, 0, self.steps, what="the fit",
            hint="fewer restarts, data.batch_size=<rows> (minibatches), or less data (data.n)")
        carry, fixed = self.prepare(roots, data)
        if progress is None:
            carry, _ = advance(carry, fixed, data, 0, self.steps)
        else:
            start, chunk = 0, max(1, self.steps // 100)
            try:
                while start < self.steps:
                    stop = min(self.steps, start + chunk)
                    t = time.perf_counter()
                    carry, best = advance(carry, fixed, data, start, stop)
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
    kept = curve_steps(steps, method.curve_points)
    P, stride, tail = len(kept), int(kept[1] - kept[0]) if len(kept) > 1 else 1, tail_length(steps)
    batch = method.batch_size  # None: every step sees all the data
    if batch:
        n_rows, factor = method.rows, method.rows / batch
        batch_model = scale_plates(model, method.data_plates, factor)

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

        def step_loss_fn(p, k):  # the loss a training step follows: on a minibatch, scaled
            if not batch:
                return loss_fn(p, k)
            k_rows, k = jax.random.split(k)
            rows = jax.random.choice(k_rows, n_rows, (batch,), replace=False)
            part = jax.tree.map(lambda x: x[rows] if jnp.ndim(x) and x.shape[0] == n_rows else x, data)
            return elbo.loss(k, svi.constrain_fn(p), batch_model, guide, part)

        return guide, svi.constrain_fn, params, loss_fn, step_loss_fn

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
        loss_fn = setup(keys[0], data)[3]
        first_keys = jax.vmap(lambda k: nth_key(k, 0))(train_keys)
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
        fixed["train_keys"] = train_keys  # (B, key): step i's key is nth_key(train_key, i)
        B = train_keys.shape[0]
        dtype = init_losses.dtype
        carry = dict(params=start, opt_state=jax.vmap(lambda p: opt.init(p, loss_fn))(start),
                     losses=jnp.full((B, P), jnp.nan, dtype),
                     grad_norms={n: jnp.full((B, P), jnp.nan, dtype) for n in start},
                     tail=jnp.zeros(B, dtype), tail_c=jnp.zeros(B, dtype), last=jnp.full(B, jnp.nan, dtype),
                     bad=jnp.full(B, steps, jnp.int32))
        return carry, fixed

    def advance(carry, fixed, data, start, stop):
        """Steps [start, stop) for every trained restart (bounds are traced: one compile for any
        chunk). Returns the new carry and the best loss at step stop-1."""
        step_loss_fn = setup(fixed["template_key"], data)[4]

        def one(p, s, k):
            p, s, loss, grads = opt.step(p, s, step_loss_fn, k)
            return p, s, loss, {n: grad_norm(g) for n, g in grads.items()}

        def body(i, c):
            k = jax.vmap(nth_key, (0, None))(fixed["train_keys"], i)
            p, s, loss, norms = jax.vmap(one)(c["params"], c["opt_state"], k)
            point = (i % stride == 0) | (i == steps - 1)
            slot = jnp.where(i == steps - 1, P - 1, i // stride)

            def record(curve, value):
                return curve.at[:, slot].set(jnp.where(point, value, curve[:, slot]))

            return dict(params=p, opt_state=s, losses=record(c["losses"], loss),
                        grad_norms={n: record(g, norms[n]) for n, g in c["grad_norms"].items()},
                        **kahan(c["tail"], c["tail_c"], loss, i >= steps - tail), last=loss,
                        bad=jnp.where((c["bad"] == steps) & ~jnp.isfinite(loss), i, c["bad"]))

        carry = jax.lax.fori_loop(start, stop, body, carry)
        return carry, jnp.nanmin(carry["last"])

    def kahan(total, compensation, value, on):
        """total + value with Kahan's compensation (where `on`): the mean of 5000 float32 losses
        summed one by one drifts in the 6th digit; compensated, it is the mean of the steps."""
        y = value - compensation
        t = total + y
        return dict(tail=jnp.where(on, t, total), tail_c=jnp.where(on, (t - total) - y, compensation))

    def finish(carry, fixed, roots, data):
        N = roots.shape[0]
        guide, constrain, _, loss_fn, _ = setup(fixed["template_key"], data)
        rows = jnp.arange(N)

        def per_replicate(x):
            return x.reshape(N, -1, *x.shape[1:])

        if batch:  # the final loss of each restart on the full data
            keys = jax.vmap(lambda k: nth_key(k, steps))(fixed["train_keys"])
            finals = jax.vmap(loss_fn)(carry["params"], keys)
            finals = jnp.where(carry["bad"] < steps, jnp.nan, finals)
        else:
            finals = carry["last"] if det else carry["tail"] / tail
        finals = per_replicate(finals)  # (N, T)
        if select == "final":
            col = best = nan_argmin(finals)
        else:
            col, best = jnp.zeros(N, dtype=int), fixed["best_initial"]
        params = jax.tree.map(per_replicate, carry["params"])
        best_params = jax.vmap(constrain)(jax.tree.map(lambda x: x[rows, col], params))
        args = () if data is None else (data,)
        samples = jax.vmap(lambda p, k: guide_draws(guide, p, k, args, FIGURE_SAMPLES))(
            best_params, jax.vmap(jax.random.fold_in, (0, None))(roots, 1))
        return dict(initial_losses=fixed["initial_losses"], trained=fixed["trained"],
                    losses=per_replicate(carry["losses"]), grad_norms=jax.tree.map(per_replicate, carry["grad_norms"]),
                    final_losses=finals, best=best, params=best_params, samples=samples,
                    failure_steps=per_replicate(carry["bad"]))

    return Programs(prepare=jax.jit(prepare), advance=jax.jit(advance, donate_argnums=0),
                    finish=jax.jit(finish), steps=steps, curve_steps=kept)


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
    programs = make_programs(exp)
    batched = jax.tree.map(np.asarray, jax.device_get(programs.run(roots, data, progress)))
    results = []
    for i in range(replicates):
        out = jax.tree.map(lambda x: x[i], batched)
        results.append(FitResult(
            initial_losses=out["initial_losses"], trained=out["trained"], losses=out["losses"],
            grad_norms=out["grad_norms"], final_losses=out["final_losses"], best=int(out["best"]),
            params=out["params"], samples=out["samples"], deterministic=exp.inference.deterministic,
            steps=programs.curve_steps, failure_steps=out["failure_steps"]))
    return results
