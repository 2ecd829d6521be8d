"""The compiled fit's state: small NamedTuples (pytrees, as numpyro's SVIState and blackjax's
states), every array with a leading axis of the B trained restarts (all replicates together).

`FitState` is what a step updates (and what a checkpoint holds); `Fixed` is what the steps only
read. Nothing in either grows with the number of steps (tests/unit/test_svi_memory.py).
"""
from __future__ import annotations

from typing import Any, NamedTuple


class Curves(NamedTuple):
    """The loss and the gradient norms at the steps kept on the curves."""
    losses: Any  # (B, P), NaN until the step is reached
    grad_norms: dict  # param name -> (B, P)


class Tail(NamedTuple):
    """Running summaries of the loss for the final loss and its noise."""
    total: Any  # (B,) Kahan-compensated sum of the losses over the last tail_length(steps) steps
    compensation: Any  # (B,) Kahan's running compensation of `total`
    last: Any  # (B,) the latest step's loss (NaN before the first step)
    d2: Any  # (B,) sum of squared differences of successive losses in the tail (the noise estimate)


class StopState(NamedTuple):
    """Early stopping (stop.rtol): per restart, its smoothed loss and since when it has not improved."""
    stop_at: Any  # (B,) int32: the step at which the restart stopped (steps while it runs)
    ema: Any  # (B,) exponential moving average of the loss (NaN before the first step)
    best_ema: Any  # (B,) the best smoothed loss so far (+inf before the first step)
    since: Any  # (B,) int32: steps since the smoothed loss last improved
    since_sum: Any  # (B,) sum of the losses since then (the final loss of a stopped restart)
    since_d2: Any  # (B,) sum of squared differences of successive losses since then (its noise)


class FitState(NamedTuple):
    """What the steps update: the trained restarts' params and optimizer state and the features'
    states (runner/inference/svi/features.py)."""
    params: Any  # param name -> (B, ...) unconstrained
    opt_state: Any  # the optimizer's state, leading axis B
    curves: Curves
    tail: Tail
    failure: Any  # (B,) int32: the first step whose loss was NaN/inf (steps if none)
    stop: StopState | None  # None when early stopping is off

    def finished(self, steps: int) -> bool:
        """Host side: has every restart stopped early (so no chunk is left to run)?"""
        return self.stop is not None and bool((self.stop.stop_at < steps).all())


class Fixed(NamedTuple):
    """What the steps only read."""
    template_key: Any  # (key,) the key of the one guide the loss, the steps and the draws use
    initial_losses: Any  # (N, R) loss of every restart at its initial params
    trained: Any  # (N, T) the restarts trained (T = 1 with select=initial, R with select=final)
    train_keys: Any  # (B, key): step i's key of trained restart b is nth_key(train_keys[b], i)
    best_initial: Any = None  # (N,) the best restart by initial loss (select=initial; None otherwise)
