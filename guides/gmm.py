"""The GMM tutorial's full guide: AutoDelta over the globals plus per-point `assignment_probs`,
with the assignments enumerated in the guide."""
from __future__ import annotations

from guides.auto import autodelta


def full_guide(model, init_values=None):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    global_guide = autodelta(model, init_values)

    def guide(data):
        global_guide(data)
        with numpyro.plate("data", data.shape[0]):
            assignment_probs = numpyro.param(
                "assignment_probs", jnp.ones((data.shape[0], model.K)) / model.K,
                constraint=constraints.simplex,
            )
            numpyro.sample("assignment", dist.Categorical(assignment_probs),
                           infer={"enumerate": "parallel"})

    return guide
