"""A generic multimodal guide: a `MixtureGeneral` of K full-covariance Gaussians over all of a
model's continuous latent sites, jointly, in unconstrained space.

It is an `AutoContinuous` guide, so NumPyro handles packing the sites into one vector, the
constraining transforms and their Jacobians. The component weights are fixed and equal: the
mixture's sample is reparameterised through the chosen component, which gives unbiased pathwise
gradients for the locations and scales, but none for the weights (Trace_ELBO has no
score-function term), so learning the weights would be biased.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.infer.autoguide import AutoContinuous

from runner.guides.auto import continuous_part


class AutoMixtureMVN(AutoContinuous):
    scale_tril_constraint = constraints.scaled_unit_lower_cholesky

    def __init__(self, model, *, K=2, init_scale=0.1, init_spread=2.0, prefix="auto", init_loc_fn=None):
        self.K, self._init_scale, self._init_spread = int(K), float(init_scale), float(init_spread)
        super().__init__(model, prefix=prefix, init_loc_fn=init_loc_fn)

    def _get_posterior(self):
        K, D = self.K, self.latent_dim
        center = self._init_latent

        def init_locs(key):
            # Components spread around the centre, balanced (for K=2: centre +- v), so that they
            # start on different sides of it and can settle in different modes.
            jitter = jax.random.uniform(key, (K, D), minval=-self._init_spread, maxval=self._init_spread)
            return center + jitter - jitter.mean(axis=0)

        locs = numpyro.param(f"{self.prefix}_locs", init_locs)
        scale_tril = numpyro.param(
            f"{self.prefix}_scale_tril",
            jnp.broadcast_to(jnp.identity(D) * self._init_scale, (K, D, D)),
            constraint=self.scale_tril_constraint,
        )
        return dist.MixtureGeneral(
            dist.Categorical(probs=jnp.ones(K) / K),
            [dist.MultivariateNormal(locs[k], scale_tril=scale_tril[k]) for k in range(K)],
        )


def automixture(model, init_values=None, K: int = 2, init_scale: float = 0.1, init_spread: float = 2.0):
    """Centre: the model's own init values where it has them, else the prior median (so restarts
    differ only in how the components are spread around it)."""
    from numpyro.infer import init_to_median, init_to_value

    from runner.schema import guide_settings

    guide_settings(K=K, init_scale=init_scale, init_spread=init_spread)
    center = init_to_value(values=init_values) if init_values else init_to_median
    return AutoMixtureMVN(continuous_part(model), K=K, init_scale=init_scale,
                          init_spread=init_spread, init_loc_fn=center)
