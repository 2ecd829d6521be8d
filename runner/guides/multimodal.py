"""Seed 004's hand-written multimodal guide: a two-mode `MixtureGeneral` along u1, a Normal along
u2, rotated by theta and mapped back onto the model's x, y with Delta sites."""
from __future__ import annotations

import math


def mixture_guide(model, init_values=None):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    def guide(data=None):
        sig1_q = numpyro.param("sig1_q", 1.0, constraint=constraints.positive)
        sig2_q = numpyro.param("sig2_q", 1.0, constraint=constraints.positive)
        b = numpyro.param("b", 1.0, constraint=constraints.positive)
        theta = numpyro.param("theta", 0.0, constraint=constraints.interval(-math.pi / 2, math.pi / 2))
        gauss_mix = dist.MixtureGeneral(
            dist.Categorical(jnp.array([0.5, 0.5])),
            [dist.Normal(loc=b, scale=sig1_q), dist.Normal(loc=-b, scale=sig1_q)],
        )
        u1 = numpyro.sample("u1", gauss_mix, infer={"is_auxiliary": True})
        u2 = numpyro.sample("u2", dist.Normal(0.0, sig2_q), infer={"is_auxiliary": True})
        c, s = jnp.cos(theta), jnp.sin(theta)
        numpyro.sample("x", dist.Delta(c * u1 - s * u2))
        numpyro.sample("y", dist.Delta(c * u2 + s * u1))

    return guide
