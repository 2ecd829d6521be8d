"""Plain NumPyro functions: no base class, no runner import."""
import numpyro
import numpyro.distributions as dist


def normal_mean(y=None):
    """The mean of Normal observations with known scale 1, Normal(0, 10) prior.

    Conjugate: with n observations the posterior of mu is Normal with precision n + 1/100 and
    mean sum(y) / (n + 1/100).
    """
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    with numpyro.plate("obs_plate", 1 if y is None else y.shape[0]):
        numpyro.sample("obs", dist.Normal(mu, 1.0), obs=y)
