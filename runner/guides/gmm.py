"""The GMM tutorial's full guide: AutoDelta over the globals plus per-point `assignment_probs`,
with the assignments enumerated in the guide.

The tutorial trains this guide after the MAP fit, starting from the fitted globals. Here it is
trained in one go, so `assignment_probs` start at the responsibilities under the restart's
initial globals (an E-step): the initial loss then equals the collapsed model's, and
`select=initial` picks restarts as it does for `guide=autodelta`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from runner.guides.auto import autodelta


def responsibilities(init_values, data):
    """p(assignment | data, globals) for the initial globals (uniform without them)."""
    if not init_values:
        return None
    locs, scale = init_values["locs"], init_values["scale"]
    weights = init_values.get("weights", jnp.ones(locs.shape[0]))  # K=1 has no weights site
    x = data[:, None] if data.ndim == 1 else data[:, None, :]
    log_lik = dist.Normal(locs, scale).log_prob(x)
    if data.ndim > 1:
        log_lik = log_lik.sum(-1)
    return jax.nn.softmax(jnp.log(weights) + log_lik, axis=-1)


def full_guide(model, init_values=None):
    if model.K == 1:
        from runner.errors import ConfigError

        raise ConfigError("guide=manual (the GMM full guide) learns assignment_probs, which model.K=1 "
                          "does not have: use guide=autodelta or autonormal")
    global_guide = autodelta(model, init_values)

    def guide(data):
        global_guide(data)
        n, K = data.shape[0], model.K

        def init_probs(key):
            probs = responsibilities(init_values, data)
            probs = jnp.ones((n, K)) / K if probs is None else probs
            return jnp.clip(probs, 1e-6, 1.0) / jnp.clip(probs, 1e-6, 1.0).sum(-1, keepdims=True)

        with numpyro.plate("data", n):
            assignment_probs = numpyro.param("assignment_probs", init_probs,
                                             constraint=constraints.simplex)
            numpyro.sample("assignment", dist.Categorical(assignment_probs),
                           infer={"enumerate": "parallel"})

    return guide
