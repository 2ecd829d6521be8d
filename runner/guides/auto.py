"""NumPyro autoguides over a model's continuous latent sites.

Enumerated discrete sites are hidden from the guide (TraceEnum_ELBO sums them out in the model),
which is what the GMM tutorial does by hand with `handlers.block`.
"""
from __future__ import annotations

from runner.schema import guide_settings


def is_enumerated(site) -> bool:
    return site["type"] == "sample" and (site.get("infer") or {}).get("enumerate") == "parallel"


def continuous_part(model):
    """The model as an autoguide should see it: enumerated discrete sites blocked."""
    from numpyro import handlers

    return handlers.block(model, hide_fn=is_enumerated)


def init_loc_fn(init_values):
    """init_to_value for the sites the model initialises itself; init_to_uniform for the rest."""
    from numpyro.infer import init_to_uniform, init_to_value

    return init_to_value(values=init_values) if init_values else init_to_uniform


def autodelta(model, init_values=None):
    from numpyro.infer.autoguide import AutoDelta

    return AutoDelta(continuous_part(model), init_loc_fn=init_loc_fn(init_values))


def autonormal(model, init_values=None, init_scale: float = 0.1):
    from numpyro.infer.autoguide import AutoNormal

    guide_settings(init_scale=init_scale)

    return AutoNormal(continuous_part(model), init_loc_fn=init_loc_fn(init_values),
                      init_scale=init_scale)


def automvn(model, init_values=None, init_scale: float = 0.1):
    from numpyro.infer.autoguide import AutoMultivariateNormal

    guide_settings(init_scale=init_scale)

    return AutoMultivariateNormal(continuous_part(model), init_loc_fn=init_loc_fn(init_values),
                                  init_scale=init_scale)


def autolowrank(model, init_values=None, init_scale: float = 0.1, rank: int | None = None):
    """Low-rank plus diagonal covariance in unconstrained space (AutoLowRankMultivariateNormal)."""
    from numpyro.infer.autoguide import AutoLowRankMultivariateNormal

    guide_settings(init_scale=init_scale, rank=rank)

    return AutoLowRankMultivariateNormal(continuous_part(model), init_loc_fn=init_loc_fn(init_values),
                                         init_scale=init_scale, rank=rank)


def autolaplace(model, init_values=None):
    """MAP point, then a Gaussian from the Hessian there (AutoLaplaceApproximation): the fit is
    deterministic like AutoDelta's; draws come from the Laplace posterior."""
    from numpyro.infer.autoguide import AutoLaplaceApproximation

    return AutoLaplaceApproximation(continuous_part(model), init_loc_fn=init_loc_fn(init_values))


def autoiaf(model, init_values=None, num_flows: int = 3, hidden_dims: list | None = None):
    """A normalizing flow: inverse autoregressive flows over a standard Normal (AutoIAFNormal)."""
    from numpyro.infer.autoguide import AutoIAFNormal

    guide_settings(num_flows=num_flows, hidden_dims=hidden_dims)

    return AutoIAFNormal(continuous_part(model), init_loc_fn=init_loc_fn(init_values),
                         num_flows=int(num_flows), hidden_dims=None if hidden_dims is None else list(hidden_dims))
