"""The two small cases issue 24 names that are not NumPyro examples: scalars only, and no data."""
import numpyro
import numpyro.distributions as dist


def binomial(n, k):
    """k successes in n trials, a uniform prior: the posterior is Beta(k + 1, n - k + 1)."""
    p = numpyro.sample("p", dist.Beta(1.0, 1.0))
    numpyro.sample("k", dist.Binomial(n, probs=p), obs=k)


def prior_only():
    """No data at all: the posterior is the prior."""
    numpyro.sample("mu", dist.Normal(1.0, 2.0))
    numpyro.sample("s", dist.HalfNormal(1.0))
