"""Seed 004's two hand-written guides for the coin's fairness."""
from __future__ import annotations


def beta_guide(model, init_values=None):
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    def guide(data=None):
        alpha_q = numpyro.param("alpha_q", 20.0 / 2.0, constraint=constraints.positive)
        beta_q = numpyro.param("beta_q", 20.0 / 2.0, constraint=constraints.positive)
        numpyro.sample("latent_fairness", dist.Beta(alpha_q, beta_q))

    return guide


def normal_guide(model, init_values=None):
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    def guide(data=None):
        mean = numpyro.param("mean", 0.5, constraint=constraints.unit_interval)
        var = numpyro.param("var", 0.1, constraint=constraints.positive)  # the seed's name; a std
        numpyro.sample("latent_fairness", dist.Normal(mean, var))

    return guide
