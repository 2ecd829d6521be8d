"""What a training step keeps besides the params, each as a pair of pure functions (optax's
GradientTransformation style), made by a small factory from its settings:

    feature = tail(steps, length)
    state = feature.init(batch, dtype, names)    # B trained restarts, the loss dtype, the param names
    state = feature.update(state, step)          # after each step (a `Step`), inside the program

The step body (runner/inference/svi/program.py) composes them: the curves, the loss tail, the
failure step and, with stop.rtol, early stopping (whose masked update `hold` keeps a stopped
restart's params). A minibatch (data.batch_size) is a pair too: `init` scales the model's data
plates, `update` draws a step's rows.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

from runner.inference.svi.state import Curves, StopState, Tail


class Step(NamedTuple):
    """What one step of every trained restart gives the features."""
    i: Any  # the step (int32 scalar)
    loss: Any  # (B,) the step's loss
    norms: dict  # param name -> (B,) the L2 norm of its gradient
    previous: Any  # (B,) the loss of step i - 1 (NaN at the first step)


class Feature(NamedTuple):
    init: Callable  # (batch, dtype, names) -> state
    update: Callable  # (state, Step) -> state


class Minibatch(NamedTuple):
    init: Callable  # model -> the model a step trains (the data plates' sites scaled by N/B)
    update: Callable  # (key, data) -> (the step's loss key, its B rows of the data)


def curves(steps: int, kept) -> Feature:
    """The loss and the gradient norms at the steps `kept` (runner.inference.svi.program.curve_steps):
    an even stride and the last step."""
    import jax.numpy as jnp

    P, stride = len(kept), int(kept[1] - kept[0]) if len(kept) > 1 else 1

    def init(batch, dtype, names):
        return Curves(jnp.full((batch, P), jnp.nan, dtype), {n: jnp.full((batch, P), jnp.nan, dtype) for n in names})

    def update(c: Curves, step: Step) -> Curves:
        point = (step.i % stride == 0) | (step.i == steps - 1)
        slot = jnp.where(step.i == steps - 1, P - 1, step.i // stride)

        def record(curve, value):
            return curve.at[:, slot].set(jnp.where(point, value, curve[:, slot]))

        return Curves(record(c.losses, step.loss), {n: record(g, step.norms[n]) for n, g in c.grad_norms.items()})

    return Feature(init, update)


def kahan(total, compensation, value, on):
    """total + value with Kahan's compensation (where `on`): the mean of 5000 float32 losses
    summed one by one drifts in the 6th digit; compensated, it is the mean of the steps."""
    import jax.numpy as jnp

    y = value - compensation
    t = total + y
    return jnp.where(on, t, total), jnp.where(on, (t - total) - y, compensation)


def tail(steps: int, length: int) -> Feature:
    """The last `length` steps' loss sum (the final loss of a stochastic objective), the last
    loss, and the squared differences of successive losses in the tail (the noise estimate)."""
    import jax.numpy as jnp

    def init(batch, dtype, names=()):
        return Tail(jnp.zeros(batch, dtype), jnp.zeros(batch, dtype), jnp.full(batch, jnp.nan, dtype),
                    jnp.zeros(batch, dtype))

    def update(t: Tail, step: Step) -> Tail:
        on = step.i >= steps - length
        total, compensation = kahan(t.total, t.compensation, step.loss, on)
        d2 = jnp.where(on & (step.i > 0), t.d2 + (step.loss - t.last) ** 2, t.d2)
        return Tail(total, compensation, step.loss, d2)

    return Feature(init, update)


def failure(steps: int) -> Feature:
    """The first step whose loss was NaN or inf (`steps` while there is none)."""
    import jax.numpy as jnp

    def init(batch, dtype=None, names=()):
        return jnp.full(batch, steps, jnp.int32)

    def update(bad, step: Step):
        return jnp.where((bad == steps) & ~jnp.isfinite(step.loss), step.i, bad)

    return Feature(init, update)


def stopping(stop, steps: int) -> Feature:
    """Early stopping (`stop`: runner.inference.svi.method.Stop): a running restart stops once its
    smoothed loss has not improved by rtol for `patience` steps (the first `window` steps, while
    the average fills, count as improving). The step body holds a stopped restart (`hold`)."""
    import jax.numpy as jnp

    def init(batch, dtype, names=()):
        return StopState(jnp.full(batch, steps, jnp.int32), jnp.full(batch, jnp.nan, dtype),
                         jnp.full(batch, jnp.inf, dtype), jnp.zeros(batch, jnp.int32),
                         jnp.zeros(batch, dtype), jnp.zeros(batch, dtype))

    def update(s: StopState, step: Step) -> StopState:
        i, loss, active = step.i, step.loss, running(s, steps)
        ema = jnp.where(jnp.isnan(s.ema), loss, stop.decay * s.ema + (1 - stop.decay) * loss)
        best = s.best_ema  # +inf before the first step
        improved = (i < stop.window) | jnp.isinf(best) | (ema < best - stop.rtol * jnp.abs(jnp.where(jnp.isinf(best), 0.0, best)))
        since = jnp.where(improved, 0, s.since + 1)
        now = active & (since >= stop.patience)
        return StopState(
            stop_at=jnp.where(now, i + 1, s.stop_at), ema=jnp.where(active, ema, s.ema),
            best_ema=jnp.where(active & improved, ema, s.best_ema), since=jnp.where(active, since, s.since),
            since_sum=jnp.where(active, jnp.where(improved, 0.0, s.since_sum + loss), s.since_sum),
            since_d2=jnp.where(active, jnp.where(improved, 0.0, s.since_d2 + (loss - step.previous) ** 2), s.since_d2))

    return Feature(init, update)


def running(s: StopState, steps: int):
    """(B,) the restarts that have not stopped."""
    return s.stop_at == steps


def hold(active, new, old):
    """The masked update: `new` where the restart runs, `old` (its value before the step) where it stopped."""
    import jax
    import jax.numpy as jnp

    def keep(n, o):
        return jnp.where(active.reshape(-1, *[1] * (n.ndim - 1)), n, o)

    return jax.tree.map(keep, new, old)


def minibatch(rows: int, batch: int, plates: frozenset) -> Minibatch:
    """data.batch_size=B of the data's N rows: each step draws B rows without replacement from its
    key and the model's data plates are scaled by N/B, as NumPyro's plate subsampling does."""
    import jax
    import jax.numpy as jnp

    def init(model):
        return scale_plates(model, plates, rows / batch)

    def update(key, data):
        k_rows, key = jax.random.split(key)
        chosen = jax.random.choice(k_rows, rows, (batch,), replace=False)
        return key, jax.tree.map(lambda x: x[chosen] if jnp.ndim(x) and x.shape[0] == rows else x, data)

    return Minibatch(init, update)


def scale_plates(model, plates: frozenset, factor: float):
    """The model with every sample site inside one of `plates` scaled by `factor` (N/B for a
    minibatch of B of the N rows): NumPyro's plate subsampling, from outside the model."""
    from numpyro.primitives import Messenger

    class ScalePlates(Messenger):
        def process_message(self, msg):
            if msg["type"] == "sample" and any(f.name in plates for f in msg["cond_indep_stack"]):
                msg["scale"] = factor if msg.get("scale") is None else factor * msg["scale"]

    return ScalePlates(model)
