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

Did it work (runner/inference/diagnostics.py reads what `finish` returns): the selected restart's
PSIS log importance weights (continuous guides), each restart's loss noise over its final-loss
steps, and the best restarts' guide draws (select=final). Early stopping (`stop.rtol`) freezes a
restart's params once its smoothed loss stops improving (a masked update) and `advance` becomes
one while_loop that ends when every restart has stopped. `Checkpoint` writes the carry between
chunks and resumes from it.
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
class Checkpoint:
    """Where and how often the fit writes its carry (params, optimizer state, curves so far, the
    step reached), and whether to continue from what is there. Written between chunks of
    `advance` (never from inside the program), to a temporary file renamed over the last one."""
    path: object  # pathlib.Path of checkpoint.npz
    every_s: float = 60.0
    resume: bool = False
    config_hash: str = ""  # the fit's config (runner.identity.config_hash): another config's checkpoint is refused

    def save(self, carry, step: int) -> None:
        import os

        import jax

        leaves = jax.tree.leaves(jax.device_get(carry))
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, step=np.asarray(step), config_hash=np.asarray(self.config_hash),
                 **{f"leaf_{i}": np.asarray(x) for i, x in enumerate(leaves)})
        os.replace(tmp, self.path)

    @staticmethod
    def saved_config_hash(path) -> str:
        """The config hash a checkpoint was written for ("" if it has none)."""
        with np.load(path) as f:
            return str(f["config_hash"]) if "config_hash" in f else ""

    def load(self, carry) -> tuple[object, int]:
        """(the saved carry in the structure of `carry`, the step it reached)."""
        import jax

        from runner.errors import ConfigError

        if not self.path.exists():
            raise ConfigError(f"resume: no checkpoint at {self.path}")
        with np.load(self.path) as f:
            saved_hash = str(f["config_hash"]) if "config_hash" in f else ""
            if self.config_hash and saved_hash and saved_hash != self.config_hash:
                raise ConfigError(f"resume: {self.path} was written by a run of another config: resume with "
                                  "the same command (and data) as that run, plus resume=...")
            leaves, tree = jax.tree.flatten(carry)
            saved = [f[f"leaf_{i}"] for i in range(len(leaves))] if f"leaf_{len(leaves) - 1}" in f else None
            if saved is None or any(a.shape != b.shape or a.dtype != b.dtype for a, b in zip(saved, leaves)):
                raise ConfigError(f"resume: {self.path} was written by a different fit (config or runner version)")
            return jax.tree.unflatten(tree, [jax.numpy.asarray(x) for x in saved]), int(f["step"])


@dataclass
class Programs:
    prepare: Callable  # (roots, data) -> (carry, fixed)
    advance: Callable  # (carry, fixed, data, start, stop) -> (carry, best loss at stop-1)
    finish: Callable  # (carry, fixed, roots, data) -> dict of arrays, leading axis = replicate
    steps: int
    curve_steps: np.ndarray = None  # the steps kept on the curves

    def run(self, roots, data, progress=None, checkpoint: Checkpoint | None = None, safe_point=None) -> dict:
        """The whole fit; with `progress` (runner.progress.Progress), in chunks of about
        `progress.chunk_s` seconds, reporting the best restart's loss after each. With early
        stopping, the chunks end once every restart has stopped. With `checkpoint`, the carry is
        written every `checkpoint.every_s` seconds (and at the end), and `checkpoint.resume`
        continues from the saved one: the same step keys on the same state, the same numbers."""
        import jax

        from runner.inference.budget import compile_within_budget

        # nothing allocated before the check: prepare is compiled, not run, for its output shapes and
        # shardings (restarts spread over devices), and advance is compiled for those
        lowered = self.prepare.lower(roots, data)  # traced once: its shapes, then its program
        prepare = lowered.compile()
        shapes = jax.tree.map(lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                              lowered.out_info, prepare.output_shardings)
        advance = compile_within_budget(
            self.advance, *shapes, data, 0, self.steps, what="the fit",
            hint="fewer restarts, data.batch_size=<rows> (minibatches), or less data (data.n)")
        carry, fixed = prepare(roots, data)
        start = 0
        if checkpoint is not None and checkpoint.resume:
            carry, start = checkpoint.load(carry)
        saving = checkpoint is not None and checkpoint.every_s < float("inf")
        if progress is None and not saving and start == 0 and safe_point is None:  # one call
            carry, _ = advance(carry, fixed, data, 0, self.steps)
            return self.finish(carry, fixed, roots, data)
        # chunks: for the progress line (about 0.25 s each) or, without one, for the checkpoints
        chunk_s = progress.chunk_s if progress is not None else (min(checkpoint.every_s, 60.0) if saving else 1.0)
        chunk, saved = max(1, self.steps // 100), time.perf_counter()
        done = (carry, start)  # the last carry known complete (a chunk's result waited for) and its step
        try:
            while start < self.steps and not ("stop_at" in carry and bool((carry["stop_at"] < self.steps).all())):
                stop = min(self.steps, start + chunk)
                t = time.perf_counter()
                carry, best = advance(carry, fixed, data, start, stop)
                best = float(best)  # waits for the chunk
                done = (carry, stop)
                rate = (stop - start) / max(time.perf_counter() - t, 1e-9)
                if saving and time.perf_counter() - saved >= checkpoint.every_s:
                    checkpoint.save(carry, stop)
                    saved = time.perf_counter()
                if progress is not None:
                    progress.update(stop, best)
                if safe_point is not None:
                    safe_point()
                start, chunk = stop, max(1, int(rate * chunk_s))
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C / SIGTERM: what was done is kept for resume=
            if saving and done[0] is carry and done[1] > 0:
                try:
                    checkpoint.save(*done)
                except Exception:
                    pass
            raise
        finally:  # also on Ctrl-C: end the terminal line
            if progress is not None:
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
    stop = getattr(method, "stop", None)  # runner.inference.svi.Stop or None (train every step)
    psis_draws = getattr(method, "psis_draws", 0) if getattr(method, "continuous", False) else 0
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
                     bad=jnp.full(B, steps, jnp.int32), tail_d2=jnp.zeros(B, dtype))
        if stop is not None:  # early stopping: per restart, its smoothed loss and since when it has not improved
            carry.update(stop_at=jnp.full(B, steps, jnp.int32), ema=jnp.full(B, jnp.nan, dtype),
                         best_ema=jnp.full(B, jnp.inf, dtype), since=jnp.zeros(B, jnp.int32),
                         since_sum=jnp.zeros(B, dtype), since_d2=jnp.zeros(B, dtype), i=jnp.zeros((), jnp.int32))
        return carry, fixed

    def advance(carry, fixed, data, start, stop_):
        """Steps [start, stop_) for every trained restart (bounds are traced: one compile for any
        chunk). Returns the new carry and the best loss at step stop_-1."""
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

            in_tail = i >= steps - tail
            out = dict(params=p, opt_state=s, losses=record(c["losses"], loss),
                       grad_norms={n: record(g, norms[n]) for n, g in c["grad_norms"].items()},
                       **kahan(c["tail"], c["tail_c"], loss, in_tail), last=loss,
                       bad=jnp.where((c["bad"] == steps) & ~jnp.isfinite(loss), i, c["bad"]),
                       tail_d2=jnp.where(in_tail & (i > 0), c["tail_d2"] + (loss - c["last"]) ** 2, c["tail_d2"]))
            if stop is None:
                return out
            return stopping(i, c, out, loss)

        def stopping(i, c, out, loss):
            """A stopped restart keeps its params and optimizer state (a masked update); a running
            one stops once its smoothed loss has not improved by rtol for `patience` steps (the
            first `window` steps, while the average fills, count as improving)."""
            active = c["stop_at"] == steps

            def keep(new, old):
                return jnp.where(active.reshape(-1, *[1] * (new.ndim - 1)), new, old)

            out["params"] = jax.tree.map(keep, out["params"], c["params"])
            out["opt_state"] = jax.tree.map(keep, out["opt_state"], c["opt_state"])
            out["bad"] = jnp.where(active, out["bad"], c["bad"])
            ema = jnp.where(jnp.isnan(c["ema"]), loss, stop.decay * c["ema"] + (1 - stop.decay) * loss)
            best = c["best_ema"]  # +inf before the first step
            improved = (i < stop.window) | jnp.isinf(best) | (ema < best - stop.rtol * jnp.abs(jnp.where(jnp.isinf(best), 0.0, best)))
            since = jnp.where(improved, 0, c["since"] + 1)
            now = active & (since >= stop.patience)
            return dict(out, ema=jnp.where(active, ema, c["ema"]),
                        best_ema=jnp.where(active & improved, ema, c["best_ema"]),
                        since=jnp.where(active, since, c["since"]),
                        since_sum=jnp.where(active, jnp.where(improved, 0.0, c["since_sum"] + loss), c["since_sum"]),
                        since_d2=jnp.where(active, jnp.where(improved, 0.0, c["since_d2"] + (loss - c["last"]) ** 2),
                                           c["since_d2"]),
                        stop_at=jnp.where(now, i + 1, c["stop_at"]), i=i + 1)

        if stop is None:
            carry = jax.lax.fori_loop(start, stop_, body, carry)
        else:  # one while_loop: it ends when every restart has stopped
            carry = dict(carry, i=jnp.asarray(start, jnp.int32))
            carry = jax.lax.while_loop(lambda c: (c["i"] < stop_) & jnp.any(c["stop_at"] == steps),
                                       lambda c: body(c["i"], c), carry)
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
        noise = jnp.sqrt(carry["tail_d2"] / (2 * max(1, min(tail, steps - 1))))
        if stop is not None:  # a stopped restart: the mean (and noise) of its last `patience` losses
            stopped = carry["stop_at"] < steps
            if not det and not batch:
                finals = jnp.where(stopped, carry["since_sum"] / stop.patience, finals)
            noise = jnp.where(stopped, jnp.sqrt(carry["since_d2"] / (2 * stop.patience)), noise)
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
        out = dict(initial_losses=fixed["initial_losses"], trained=fixed["trained"],
                   losses=per_replicate(carry["losses"]), grad_norms=jax.tree.map(per_replicate, carry["grad_norms"]),
                   final_losses=finals, best=best, params=best_params, samples=samples,
                   failure_steps=per_replicate(carry["bad"]), noise=per_replicate(noise))
        if stop is not None:
            out["stopped"] = per_replicate(carry["stop_at"])
        if psis_draws:  # PSIS: log importance weights of the selected restart's guide (Yao et al. 2018)
            out["log_weights"] = jax.vmap(lambda p, k: log_weights(model, guide, p, k, args, psis_draws))(
                best_params, jax.vmap(jax.random.fold_in, (0, None))(roots, 2))
        if select == "final" and R > 1:  # restart agreement: the K best restarts of each replicate
            K = min(R, TOP_RESTARTS)
            top = jnp.argsort(jnp.where(jnp.isnan(finals), jnp.inf, finals), axis=-1)[:, :K]  # (N, K)
            out["top"] = top
            if not det:
                top_params = jax.tree.map(lambda x: x[rows[:, None], top].reshape(N * K, *x.shape[2:]), params)
                keys = jax.vmap(lambda k: jax.random.split(jax.random.fold_in(k, 3), K))(roots).reshape(N * K, -1)
                draws = jax.vmap(lambda p, k: guide_draws(guide, constrain(p), k, args, AGREEMENT_DRAWS))(top_params, keys)
                out["top_draws"] = jax.tree.map(lambda x: x.reshape(N, K, *x.shape[1:]), draws)
        return out

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


def fit(exp, progress=None, checkpoint: Checkpoint | None = None, safe_point=None) -> list[FitResult]:
    """One FitResult per replicate (seed, seed+1, ..., seed+replicates-1), all restarts and
    replicates in the same compiled programs. `progress`: a runner.progress.Progress, or None;
    `checkpoint`: where to write the carry (and whether to resume from it), or None."""
    import jax
    import jax.numpy as jnp

    replicates = exp.inference.replicates
    roots = jnp.stack([jax.random.PRNGKey(exp.seed + i) for i in range(replicates)])
    data = None if exp.data is None else jax.tree.map(jnp.asarray, exp.data)
    programs = make_programs(exp)
    batched = jax.tree.map(np.asarray, jax.device_get(programs.run(roots, data, progress, checkpoint, safe_point)))
    results = []
    for i in range(replicates):
        out = jax.tree.map(lambda x: x[i], batched)
        results.append(FitResult(
            initial_losses=out["initial_losses"], trained=out["trained"], losses=out["losses"],
            grad_norms=out["grad_norms"], final_losses=out["final_losses"], best=int(out["best"]),
            params=out["params"], samples=out["samples"], deterministic=exp.inference.deterministic,
            steps=programs.curve_steps, failure_steps=out["failure_steps"], noise=out["noise"],
            log_weights=out.get("log_weights"), top=out.get("top"), top_draws=out.get("top_draws"),
            stopped=out.get("stopped")))
    if results[0].stopped is not None:  # every restart stopped early: the curves end where the last one did
        last = max(int(r.stopped.max()) for r in results) - 1
        keep = programs.curve_steps <= last
        if not keep.all():
            for r in results:
                r.steps = programs.curve_steps[keep]
                r.losses = r.losses[:, keep]
                r.grad_norms = {n: g[:, keep] for n, g in r.grad_norms.items()}
    return results
