"""The ELBOs of conf/loss, as runner's own targets: a stored config then names runner code only
(runner.trust), and the objects are numpyro's own (build's isinstance checks hold)."""
from __future__ import annotations

from runner import schema


def trace_elbo(num_particles: int = 1, **kwargs):
    """numpyro.infer.Trace_ELBO."""
    from numpyro.infer import Trace_ELBO

    return Trace_ELBO(num_particles=schema.positive_int("loss.num_particles", num_particles), **kwargs)


def traceenum_elbo(num_particles: int = 1, **kwargs):
    """numpyro.infer.TraceEnum_ELBO: sums out sites marked for parallel enumeration exactly."""
    from numpyro.infer import TraceEnum_ELBO

    return TraceEnum_ELBO(num_particles=schema.positive_int("loss.num_particles", num_particles), **kwargs)
