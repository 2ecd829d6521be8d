"""parts -> results: the fit is compiled JAX, with nothing per step or per restart in Python.

Restarts are a leading array axis (`jax.vmap`); steps are a `fori_loop` inside a jitted program.
The fit is three jitted functions of a `FitProgram`: `prepare` (initialise and score every
restart; with `select=initial`, the GMM tutorial's rule, keep the best by initial loss),
`advance` (run steps [start, stop) of every trained restart; the bounds are traced, so any chunk
runs the same compiled program) and `finish` (final losses, the best restart, its guide samples
for figures). Their state is typed (runner/inference/svi/state.py: `FitState`, `Fixed`); a step
is the optimizer's step followed by the features' updates (runner/inference/svi/features.py:
curves, loss tail, failure step, early stopping, minibatches). The host side (one call or chunks,
the memory budget, progress, checkpoints, the safe point) is runner/inference/svi/loop.py. No host
callback is compiled into the program, so XLA's persistent cache keeps working (JAX does not
cache programs with host callbacks).

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

Did it work (runner/inference/diagnostics.py reads what `finish` returns): the selected restart's
PSIS log importance weights (continuous guides), each restart's loss noise over its final-loss
steps, and the best restarts' guide draws (select=final). Early stopping (`stop.rtol`) freezes a
restart's params once its smoothed loss stops improving (a masked update) and `advance` becomes
one while_loop that ends when every restart has stopped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

from runner.inference.restarts import nan_argmin, shard_restarts
from runner.inference.svi import features
from runner.inference.svi.features import Step
from runner.inference.svi.loop import Checkpoint, run
from runner.inference.svi.state import Fixed, FitState

KEY_DERIVATION = (
    "root=PRNGKey(seed); k_init,k_train=split(root); restart r: "
    "k_values,k_params=split(split(k_init,R)[r]); step keys=split(fold_in(k_train,r),steps)"
)
FIGURE_SAMPLES = 2000  # draws of the selected restart's guide: the run's posterior (summary, posterior.npz, inference_data.nc, figures)
TOP_RESTARTS = 4  # restart agreement compares this many of the best restarts (select=final)
AGREEMENT_DRAWS = 500  # guide draws per compared restart for their split-R-hat
PSIS_BATCH = 100  # the PSIS draws are evaluated this many at a time (a model over large data)


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
    log_weights: np.ndarray = None  # (S,) log p(x, z) - log q(z) at S guide draws of the selected restart (PSIS)
    noise: np.ndarray = None  # (T,) the loss's Monte-Carlo noise (sd of one step's loss) over the final loss's steps
    top: np.ndarray = None  # (K,) the K best trained rows by final loss (select=final, restarts > 1)
    top_draws: dict = None  # site -> (K, D, ...) guide draws of those restarts (stochastic guides)
    stopped: np.ndarray = None  # (T,) the step at which each restart stopped (stop.rtol), the number of steps if it did not

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


@dataclass
class Programs:
    prepare: Callable  # (roots, data) -> (FitState, Fixed)
    advance: Callable  # (state, fixed, data, start, stop) -> (state, best loss at stop-1)
    finish: Callable  # (state, fixed, roots, data) -> dict of arrays, leading axis = replicate
    steps: int
    curve_steps: np.ndarray = None  # the steps kept on the curves
    available: int | None = None  # bytes the fit may plan to use (None: what the machine has free)
    pruner: Any = None  # a fused sweep's pruning between chunks (runner.inference.svi.fused.Halving)
    cache: Any = None  # the programs an earlier command compiled (runner.inference.program_cache), or None

    def run(self, roots, data, progress=None, checkpoint: Checkpoint | None = None,
            safe_point: Callable[[], None] | None = None) -> dict:
        """The whole fit (runner.inference.svi.loop.run): in one call, or in chunks for the
        progress line (`progress.chunk_s` seconds), the checkpoints, the safe point and a fused
        sweep's pruner."""
        return run(self, roots, data, progress, checkpoint, safe_point)


class Setup(NamedTuple):
    """One guide and the functions the program takes from it."""
    guide: Any
    constrain: Callable  # unconstrained params -> constrained
    params: Any  # the guide's initial unconstrained params
    loss: Callable  # (params, key) -> the loss on the full data
    step_loss: Callable  # (params, key) -> the loss a training step follows (on a minibatch, scaled)


@dataclass(frozen=True, eq=False)
class FitProgram:
    """The fit of one experiment: its settings and features; make_programs jits its `prepare`,
    `advance` and `finish` (a `Programs`)."""
    method: Any  # runner.inference.svi.SVI: the guide, loss, optimizer and settings
    model: Any
    restarts: int
    curves: features.Feature
    tail: features.Feature
    failure: features.Feature
    stopping: features.Feature | None = None  # early stopping (stop.rtol), None: every step trained
    minibatch: features.Minibatch | None = None  # data.batch_size, None: every step sees all the data
    batch_model: Any = None  # the model a minibatch step trains (its data plates scaled)
    psis_draws: int = 0  # guide draws for PSIS (continuous guides), 0: none
    stop: Any = None  # the early stopping settings (method.stop; a fused program's: (B,) arrays per row)
    varying: Any = None  # a fused program's runner.inference.svi.fused.Varying: the optimizer's numbers per row
    model_numbers: Any = None  # a fused program's model numbers: attribute -> (J,) one per job (None: the model's own)
    job_rows: int = 1  # a fused program's replicates per job (rows of `roots` per job)
    kept: Any = None  # the steps kept on the curves (curve_steps)

    @property
    def steps(self) -> int:
        return self.method.steps

    def setup(self, key, data, numbers=None) -> Setup:
        """Fresh guide per restart (NumPyro autoguides cache their prototype; issue 1753).
        `numbers`: a fused job's model numbers (traced), None: the model's own."""
        import jax
        from numpyro.infer import SVI
        from numpyro.optim import Adam

        model, elbo = self.model_at(numbers), self.method.loss
        args = () if data is None else (data,)
        k_values, k_params = jax.random.split(key)
        guide = self.method.make_guide(model, data, k_values)
        svi = SVI(model, guide, Adam(1e-3), elbo)  # SVI only initialises; our step is optimizer.step
        state = svi.init(k_params, *args)
        params = svi.optim.get_params(state.optim_state)
        loss_fn, step_loss_fn = self.losses(model, guide, svi.constrain_fn, data,
                                            self.batch_model if numbers is None else None)
        return Setup(guide, svi.constrain_fn, params, loss_fn, step_loss_fn)

    def losses(self, model, guide, constrain, data, batch_model=None) -> tuple[Callable, Callable]:
        """(loss on the full data, the loss a step follows: on a minibatch, scaled) of `guide` for
        `model`; `batch_model`: the model's scaled minibatch model when already made."""
        elbo = self.method.loss
        args = () if data is None else (data,)

        def loss_fn(p, k):
            return elbo.loss(k, constrain(p), model, guide, *args)

        if self.minibatch is None:
            return loss_fn, loss_fn
        scaled = batch_model if batch_model is not None else self.minibatch.init(model)

        def step_loss_fn(p, k):  # on a minibatch, scaled
            k, part = self.minibatch.update(k, data)
            return elbo.loss(k, constrain(p), scaled, guide, part)

        return loss_fn, step_loss_fn

    def row_loss(self, template: Setup, data, numbers, step: bool = False) -> Callable:
        """(params, key) -> the loss (`step`: the loss a step follows) of a fused job's row with
        its model numbers, on the template guide; the template's own without numbers."""
        if numbers is None:
            return template.step_loss if step else template.loss
        return self.losses(self.model_at(numbers), template.guide, template.constrain, data)[1 if step else 0]

    def model_at(self, numbers):
        """The model with a fused job's numbers (attributes of a copy), or the model itself."""
        if not numbers:
            return self.model
        import copy

        model = copy.copy(self.model)
        for name, value in numbers.items():
            setattr(model, name, value)
        return model

    @property
    def jobs(self) -> int:
        """A fused program's jobs (1 otherwise)."""
        return len(next(iter(self.model_numbers.values()))) if self.model_numbers else 1

    def numbers_by_row(self, per_job: int):
        """A fused program's model numbers, one per row for rows in blocks of `per_job` per job
        (None without model numbers)."""
        if not self.model_numbers:
            return None
        import jax.numpy as jnp

        return {k: jnp.asarray(np.repeat(v, per_job)) for k, v in self.model_numbers.items()}

    def prepare(self, roots, data) -> tuple[FitState, Fixed]:
        """roots: (N, key) for N replicate experiments. Their restarts are flattened into one
        (N*R) axis, so N replicates compile to the same program shape as one run.
        Returns (state, fixed): what training updates, and what it only reads."""
        import jax

        N, R = roots.shape[0], self.restarts
        keys, train_keys = restart_keys(roots, R)
        # Per-restart initial params need a fresh guide each (vmapped); the loss, the training and
        # the samples use one template guide: a guide's params do not depend on its init values.
        numbers = self.numbers_by_row(self.job_rows * R)  # a fused job's model numbers, per restart
        init_params = jax.vmap(lambda k, n: self.setup(k, data, n).params)(keys, numbers)
        template = self.setup(keys[0], data)
        first_keys = jax.vmap(lambda k: nth_key(k, 0))(train_keys)
        init_losses = jax.vmap(lambda p, k, n: self.row_loss(template, data, n)(p, k))(
            init_params, first_keys, numbers).reshape(N, R)
        start, fixed = self.select_start(init_params, init_losses, keys[0], train_keys)
        return self.initial_state(start, template.loss, fixed), fixed

    def select_start(self, init_params, init_losses, template_key, train_keys) -> tuple[Any, Fixed]:
        """(the trained restarts' initial params, Fixed): with select=initial only the
        best-initialised restart of each replicate is trained, otherwise all."""
        import jax
        import jax.numpy as jnp

        N, R = init_losses.shape
        if self.method.select != "initial":
            return init_params, Fixed(template_key, init_losses, jnp.broadcast_to(jnp.arange(R), (N, R)), train_keys)
        rows, best = jnp.arange(N), nan_argmin(init_losses)  # (N,)
        start = jax.tree.map(lambda x: x.reshape(N, R, *x.shape[1:])[rows, best], init_params)
        return start, Fixed(template_key, init_losses, best[:, None], train_keys.reshape(N, R, -1)[rows, best], best)

    def initial_state(self, params, loss_fn, fixed: Fixed) -> FitState:
        import jax

        batch, dtype, names = fixed.train_keys.shape[0], fixed.initial_losses.dtype, list(params)
        opt_state = jax.vmap(lambda p: self.method.optimizer.init(p, loss_fn))(params)
        stop = None if self.stopping is None else self.stopping.init(batch, dtype, names)
        return FitState(params, opt_state, self.curves.init(batch, dtype, names), self.tail.init(batch, dtype, names),
                        self.failure.init(batch, dtype, names), stop)

    def advance(self, state: FitState, fixed: Fixed, data, start, stop) -> tuple[FitState, Any]:
        """Steps [start, stop) for every trained restart (bounds are traced: one compile for any
        chunk). Returns the new state and the best loss at step stop-1."""
        import jax
        import jax.numpy as jnp

        template = self.setup(fixed.template_key, data)

        def step_loss(numbers):  # a fused job's row: its loss with its own model numbers
            return self.row_loss(template, data, numbers, step=True)

        def body(i, s):
            return self.step(s, fixed.train_keys, step_loss, i)

        if self.stopping is None:
            state = jax.lax.fori_loop(start, stop, body, state)
        else:  # one while_loop: it ends when every restart has stopped
            _, state = jax.lax.while_loop(
                lambda c: (c[0] < stop) & jnp.any(features.running(c[1].stop, self.steps)),
                lambda c: (c[0] + 1, body(*c)), (jnp.asarray(start, jnp.int32), state))
        return state, jnp.nanmin(state.tail.last)

    def step(self, state: FitState, train_keys, step_loss: Callable, i) -> FitState:
        """One optimizer step of every trained restart, then the features' updates; a stopped
        restart keeps its params, optimizer state and failure step (a masked update).
        `step_loss(model numbers or None)`: the loss a row's step follows."""
        import jax

        varying = self.varying

        def one(p, s, k, numbers, model_numbers):
            optimizer = self.method.optimizer if varying is None else varying.optimizer(numbers)
            p, s, loss, grads = optimizer.step(p, s, step_loss(model_numbers), k)
            return p, s, loss, {n: grad_norm(g) for n, g in grads.items()}

        keys = jax.vmap(nth_key, (0, None))(train_keys, i)
        numbers = None if varying is None else varying.rows()
        model_numbers = self.numbers_by_row(train_keys.shape[0] // self.jobs) if self.model_numbers else None
        params, opt_state, loss, norms = jax.vmap(one)(state.params, state.opt_state, keys, numbers, model_numbers)
        step = Step(i, loss, norms, state.tail.last)
        new = FitState(params, opt_state, self.curves.update(state.curves, step), self.tail.update(state.tail, step),
                       self.failure.update(state.failure, step), state.stop)
        if self.stopping is None:
            return new
        active = features.running(state.stop, self.steps)
        return new._replace(params=features.hold(active, new.params, state.params),
                            opt_state=features.hold(active, new.opt_state, state.opt_state),
                            failure=features.hold(active, new.failure, state.failure),
                            stop=self.stopping.update(state.stop, step))

    def finish(self, state: FitState, fixed: Fixed, roots, data) -> dict:
        """The results, leading axis = replicate: final losses and noise, the selected restart's
        params and guide samples, and the diagnostics' inputs (PSIS weights, the best restarts)."""
        import jax
        import jax.numpy as jnp

        N, R, select = roots.shape[0], self.restarts, self.method.select
        guide, constrain, _, loss_fn, _ = self.setup(fixed.template_key, data)
        rows = jnp.arange(N)

        def per_replicate(x):
            return x.reshape(N, -1, *x.shape[1:])

        finals, noise = self.final_losses(state, fixed, loss_fn)
        finals = per_replicate(finals)  # (N, T)
        if select == "final":
            col = best = nan_argmin(finals)
        else:
            col, best = jnp.zeros(N, dtype=int), fixed.best_initial
        params = jax.tree.map(per_replicate, state.params)
        best_params = jax.vmap(constrain)(jax.tree.map(lambda x: x[rows, col], params))
        args = () if data is None else (data,)
        samples = jax.vmap(lambda p, k: guide_draws(guide, p, k, args, FIGURE_SAMPLES))(
            best_params, jax.vmap(jax.random.fold_in, (0, None))(roots, 1))
        out = dict(initial_losses=fixed.initial_losses, trained=fixed.trained,
                   losses=per_replicate(state.curves.losses),
                   grad_norms=jax.tree.map(per_replicate, state.curves.grad_norms),
                   final_losses=finals, best=best, params=best_params, samples=samples,
                   failure_steps=per_replicate(state.failure), noise=per_replicate(noise))
        if state.stop is not None:
            out["stopped"] = per_replicate(state.stop.stop_at)
        if self.psis_draws:  # PSIS: log importance weights of the selected restart's guide (Yao et al. 2018)
            out["log_weights"] = jax.vmap(
                lambda p, k, n: log_weights(self.model_at(n), guide, p, k, args, self.psis_draws))(
                best_params, jax.vmap(jax.random.fold_in, (0, None))(roots, 2), self.numbers_by_row(self.job_rows))
        if select == "final" and R > 1:  # restart agreement: the K best restarts of each replicate
            out.update(self.agreement(finals, params, roots, guide, constrain, args))
        return out

    def final_losses(self, state: FitState, fixed: Fixed, loss_fn) -> tuple[Any, Any]:
        """(B,) final losses: the last loss (a deterministic objective), the mean of the tail's
        losses, or a minibatch fit's loss on the full data; a stopped restart's is the mean of its
        last `patience` losses. And (B,) the loss noise over those steps."""
        import jax
        import jax.numpy as jnp

        steps, tail, method = self.steps, tail_length(self.steps), self.method
        if self.minibatch is not None:  # the final loss of each restart on the full data
            keys = jax.vmap(lambda k: nth_key(k, steps))(fixed.train_keys)
            finals = jax.vmap(loss_fn)(state.params, keys)
            finals = jnp.where(state.failure < steps, jnp.nan, finals)
        else:
            finals = state.tail.last if method.deterministic else state.tail.total / tail
        noise = jnp.sqrt(state.tail.d2 / (2 * max(1, min(tail, steps - 1))))
        if state.stop is not None:  # a stopped restart: the mean (and noise) of its last `patience` losses
            # (a restart pruned by a fused sweep stopped before `patience` steps without improvement:
            # its tail was evaluated at the params it stopped with, as every held restart's is)
            patience = self.stop.patience
            stopped = (state.stop.stop_at < steps) & (state.stop.since >= patience)
            if not method.deterministic and self.minibatch is None:
                finals = jnp.where(stopped, state.stop.since_sum / patience, finals)
            noise = jnp.where(stopped, jnp.sqrt(state.stop.since_d2 / (2 * patience)), noise)
        return finals, noise

    def agreement(self, finals, params, roots, guide, constrain, args) -> dict:
        """Restart agreement: `top`, the K best trained restarts of each replicate by final loss,
        and (stochastic guides) `top_draws`, their guide draws."""
        import jax
        import jax.numpy as jnp

        N, K = roots.shape[0], min(self.restarts, TOP_RESTARTS)
        top = jnp.argsort(jnp.where(jnp.isnan(finals), jnp.inf, finals), axis=-1)[:, :K]  # (N, K)
        if self.method.deterministic:
            return dict(top=top)
        rows = jnp.arange(N)
        top_params = jax.tree.map(lambda x: x[rows[:, None], top].reshape(N * K, *x.shape[2:]), params)
        keys = jax.vmap(lambda k: jax.random.split(jax.random.fold_in(k, 3), K))(roots).reshape(N * K, -1)
        draws = jax.vmap(lambda p, k: guide_draws(guide, constrain(p), k, args, AGREEMENT_DRAWS))(top_params, keys)
        return dict(top=top, top_draws=jax.tree.map(lambda x: x.reshape(N, K, *x.shape[1:]), draws))


def restart_keys(roots, R: int) -> tuple[Any, Any]:
    """(N*R, key) initialisation keys and (N*R, key) training keys of every restart of every
    replicate (KEY_DERIVATION), spread over the devices."""
    import jax
    import jax.numpy as jnp

    N = roots.shape[0]
    k_init, k_train = jax.vmap(jax.random.split)(roots).transpose(1, 0, 2)
    keys = jax.vmap(lambda k: jax.random.split(k, R))(k_init).reshape(N * R, -1)
    train_keys = jax.vmap(lambda k: jax.vmap(jax.random.fold_in, (None, 0))(k, jnp.arange(R)))(k_train)
    return shard_restarts(keys), shard_restarts(train_keys.reshape(N * R, -1))


def make_programs(exp, fused=None) -> Programs:
    """The fit as three jitted functions for the experiment `exp` (see the module docstring);
    `fused` (runner.inference.svi.fused.Rows): one program for several experiments that differ
    in their seeds and numbers only (a fused sweep's jobs), their settings per row."""
    import jax

    from runner.inference import program_cache

    fit = fit_program(exp, fused)
    return Programs(prepare=jax.jit(fit.prepare), advance=jax.jit(fit.advance, donate_argnums=0),
                    finish=jax.jit(fit.finish), steps=fit.steps, curve_steps=fit.kept,
                    cache=None if fused is not None else program_cache.for_experiment(exp))


def fit_program(exp, fused=None) -> FitProgram:
    """The FitProgram of `exp` (make_programs jits its parts; a calibration, runner.check.sbc,
    vmaps the whole of it over simulated data sets)."""
    method = exp.inference  # runner.inference.svi.SVI: the guide, loss, optimizer and settings
    steps = method.steps
    kept = curve_steps(steps, method.curve_points)
    # runner.inference.svi.method.Stop or None (train every step); fused: its fields per row
    stop = method.stop if fused is None else fused.stop
    batch = method.batch_size  # None: every step sees all the data
    minibatch = features.minibatch(method.rows, batch, method.data_plates) if batch else None
    fit = FitProgram(
        method=method, model=exp.model, restarts=exp.restarts, curves=features.curves(steps, kept),
        tail=features.tail(steps, tail_length(steps)), failure=features.failure(steps),
        stopping=None if stop is None else features.stopping(stop, steps), minibatch=minibatch,
        batch_model=None if minibatch is None else minibatch.init(exp.model),
        psis_draws=method.psis_draws if method.continuous else 0, stop=stop,
        varying=None if fused is None else fused.varying, model_numbers=None if fused is None else fused.model,
        job_rows=method.replicates, kept=kept)
    return fit


def grad_norm(g):
    """L2 norm of one param's gradient; a param may be a pytree (a flow guide's network weights)."""
    import jax
    import jax.numpy as jnp

    leaves = jax.tree.leaves(g)
    if len(leaves) == 1:
        return jnp.linalg.norm(jnp.ravel(leaves[0]))
    return jnp.sqrt(sum(jnp.sum(x ** 2) for x in leaves))


def log_weights(model, guide, params, key, args, num: int):
    """(num,) log p(x, z) - log q(z) at `num` draws z of the guide: the importance weights whose
    tail NumPyro's `psis_diagnostic` fits (its per-draw computation, here inside the program)."""
    import jax
    from numpyro.handlers import seed
    from numpyro.infer.elbo import get_importance_log_probs

    def one(k):
        k_model, k_guide = jax.random.split(k)
        model_lp, guide_lp = get_importance_log_probs(seed(model, k_model), seed(guide, k_guide), args, {}, params)
        return sum(v.sum() for v in model_lp.values()) - sum(v.sum() for v in guide_lp.values())

    return jax.lax.map(one, jax.random.split(key, num), batch_size=PSIS_BATCH)  # memory: PSIS_BATCH x the data


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


def fit(exp, progress=None, checkpoint: Checkpoint | None = None,
        safe_point: Callable[[], None] | None = None) -> list[FitResult]:
    """One FitResult per replicate (seed, seed+1, ..., seed+replicates-1), all restarts and
    replicates in the same compiled programs. `progress`: a runner.progress.Progress, or None;
    `checkpoint`: where to write the state (and whether to resume from it), or None;
    `safe_point`: called after every chunk (chunks of about a second at least); an exception
    from it stops the fit as Ctrl-C does (runner/inference/svi/loop.py)."""
    programs = make_programs(exp)
    results = run_rows([exp], programs, progress, checkpoint, safe_point)
    if results[0].stopped is not None:
        trim_stopped(results, programs.curve_steps)
    return results


def run_rows(exps: list, programs: Programs, progress=None, checkpoint: Checkpoint | None = None,
             safe_point: Callable[[], None] | None = None) -> list[FitResult]:
    """One FitResult per replicate of each experiment (seeds seed..seed+replicates-1 of each, in
    order), from one run of `programs` (every experiment's: one, or a fused sweep's group)."""
    import jax

    from runner.inference import program_cache
    from runner.inference.restarts import root_keys

    exp, n = exps[0], exps[0].inference.replicates
    roots = root_keys([e.seed + i for e in exps for i in range(n)])
    data = None if exp.data is None else program_cache.on_device(exp.data)
    batched = jax.tree.map(np.asarray, jax.device_get(programs.run(roots, data, progress, checkpoint, safe_point)))
    return [result_of(jax.tree.map(lambda x: x[i], batched), programs.curve_steps, exp.inference.deterministic)
            for i in range(len(exps) * n)]


def result_of(out: dict, kept: np.ndarray, deterministic: bool) -> FitResult:
    """One replicate's FitResult from `finish`'s arrays (indexed by replicate)."""
    return FitResult(
        initial_losses=out["initial_losses"], trained=out["trained"], losses=out["losses"],
        grad_norms=out["grad_norms"], final_losses=out["final_losses"], best=int(out["best"]),
        params=out["params"], samples=out["samples"], deterministic=deterministic,
        steps=kept, failure_steps=out["failure_steps"], noise=out["noise"],
        log_weights=out.get("log_weights"), top=out.get("top"), top_draws=out.get("top_draws"),
        stopped=out.get("stopped"))


def trim_stopped(results: list[FitResult], kept: np.ndarray) -> None:
    """Every restart stopped early: the curves end where the last one did."""
    last = max(int(r.stopped.max()) for r in results) - 1
    keep = kept <= last
    if not keep.all():
        for r in results:
            r.steps = kept[keep]
            r.losses = r.losses[:, keep]
            r.grad_norms = {n: g[:, keep] for n, g in r.grad_norms.items()}
