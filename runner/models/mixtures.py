"""What a mixture family gives EM, and what scores a point estimate of one: the `EMFamily`
protocol (closed-form updates for a mixture of K components), its E-step, and the average
log-likelihood of the data on EM's scale (runner.inference.em fits with them; the run's writer
scores an SVI or NUTS point estimate with them; runner.fitted assigns new points with them)."""
from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class EMFamily(Protocol):
    """What a model gives EM: closed-form updates for a mixture of K components (runner's gmm and
    bmm; a function model through `runner.model_extras(em_init=..., ...)`). A model may also
    define `em_data(data)`: the one (N, D) or (N,) array EM works on (default: the data)."""
    K: int

    def em_init(self, key, data, reg: float) -> dict:
        """Initial EM parameters for one restart (init=random)."""

    def em_log_joint(self, params: dict, data):
        """(N, K) log weight_k + log p(x_n | component k)."""

    def em_m_step(self, resp, data, reg: float) -> dict:
        """Maximum-likelihood parameters given (N, K) responsibilities."""

    def em_params(self, latents: dict) -> dict:
        """EM parameters from a point estimate of the model's latent sites (to score an SVI or
        NUTS fit by the same average log-likelihood as EM)."""


def supports(model) -> bool:
    return isinstance(model, EMFamily)


def em_data(model, data):
    """The array EM works on: the model's em_data(data) if it has one, else the data."""
    pick = getattr(model, "em_data", None)
    return data if pick is None else pick(data)


def e_step(model, params, data):
    """(average log-likelihood, (N, K) responsibilities)."""
    import jax
    import jax.numpy as jnp

    data = em_data(model, data)
    log_joint = model.em_log_joint(params, data)
    ll = jax.scipy.special.logsumexp(log_joint, axis=-1)
    return ll.mean(), jnp.exp(log_joint - ll[:, None])


def average_loglik(model, latents: dict, data, kept=None) -> float:
    """The average log-likelihood of the data at a point estimate of the model's latent sites
    (an SVI or NUTS fit), on the same scale as EM's. `kept`: the experiment's kept programs
    (runner.inference.program_cache), or None."""

    from runner.inference import program_cache

    ll, _ = program_cache.run(kept, "average_loglik", compiled_e_step(model, from_latents=True),
                              program_cache.on_device(dict(latents)), program_cache.on_device(data))
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
