"""NumPyro autoguides over a model's continuous latent sites.

Enumerated discrete sites are hidden from the guide (TraceEnum_ELBO sums them out in the model),
which is what the GMM tutorial does by hand with `handlers.block`.
"""
from __future__ import annotations


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

    return AutoNormal(continuous_part(model), init_loc_fn=init_loc_fn(init_values),
                      init_scale=init_scale)


def automvn(model, init_values=None, init_scale: float = 0.1):
    from numpyro.infer.autoguide import AutoMultivariateNormal

    return AutoMultivariateNormal(continuous_part(model), init_loc_fn=init_loc_fn(init_values),
                                  init_scale=init_scale)
