"""Optimizers as pairs of pure functions over unconstrained guide params.

`init(params, loss_fn) -> state` and `step(params, state, loss_fn, key) -> (params, state, loss, grads)`
where `loss_fn(params, key)` is the ELBO loss. Both run inside the compiled fit (vmap over
restarts, scan over steps). optax transforms are wrapped as they are; jaxopt's L-BFGS needs a
deterministic objective, so it evaluates the loss with one fixed key.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from runner import schema
from runner.errors import ConfigError


@dataclass(frozen=True)
class OptaxOptimizer:
    tx: Any  # optax.GradientTransformation
    needs_deterministic: bool = False

    def init(self, params, loss_fn):
        return self.tx.init(params)

    def step(self, params, state, loss_fn: Callable, key):
        import jax
        import optax

        loss, grads = jax.value_and_grad(loss_fn)(params, key)
        updates, state = self.tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss, grads


def optax_transform(name: str, lr=None, schedule=None, **kwargs) -> OptaxOptimizer:
    """Any optax transform by name, e.g. name=adam lr=0.1 b1=0.8. `schedule` is a partial optax
    schedule (e.g. cosine_schedule below) that gets `init_value=lr`."""
    import optax

    fn = getattr(optax, name, None)
    if not callable(fn) or name.startswith("_"):
        raise ConfigError(f"optim.name='{name}' is not an optax optimizer (e.g. adam, sgd, adamw)")
    if lr is not None and not callable(lr) and not traced(lr):  # traced: a fused sweep's row (checked as a number)
        schema.positive("optim.lr", lr)  # NaN or inf ran to a wrong loss
    if schedule is not None:
        lr = schedule(init_value=lr)
    try:
        tx = fn(learning_rate=lr, **kwargs) if lr is not None else fn(**kwargs)
    except TypeError as e:
        raise ConfigError(f"optim '{name}': {e}") from None
    return OptaxOptimizer(tx)


def traced(value) -> bool:
    """A value inside a compiled program (a fused sweep gives each row its own numbers)."""
    import jax

    return isinstance(value, jax.core.Tracer)


def cosine_schedule(init_value: float, decay_steps: int, alpha: float = 0.0, **kwargs):
    """optax.cosine_decay_schedule (conf/optim/adam_cosine.yaml's `schedule`, partial: optax_transform
    gives it `init_value=lr`); named here so that a stored config names runner code only."""
    import optax

    return optax.cosine_decay_schedule(init_value=init_value, decay_steps=decay_steps, alpha=alpha, **kwargs)


@dataclass(frozen=True)
class LBFGS:
    """jaxopt.LBFGS, one `update` per step; the loss is recorded after each update."""

    history_size: int = 10
    maxls: int = 15
    fixed_key_seed: int = 0
    needs_deterministic: bool = True

    def _solver(self, loss_fn):
        import warnings

        import jax

        with warnings.catch_warnings():  # "JAXopt is no longer maintained": its L-BFGS is what runner uses
            warnings.simplefilter("ignore", DeprecationWarning)
            import jaxopt

        key = jax.random.PRNGKey(self.fixed_key_seed)
        return jaxopt.LBFGS(fun=lambda p: loss_fn(p, key), history_size=self.history_size,
                            maxls=self.maxls, maxiter=1_000_000)

    def init(self, params, loss_fn):
        return self._solver(loss_fn).init_state(params)

    def step(self, params, state, loss_fn, key):
        params, state = self._solver(loss_fn).update(params, state)
        return params, state, state.value, state.grad


def lbfgs(history_size: int = 10, maxls: int = 15) -> LBFGS:
    from runner.extras import require

    require("optim", "lbfgs")  # jaxopt is the `lbfgs` extra
    return LBFGS(history_size=int(history_size), maxls=int(maxls))
