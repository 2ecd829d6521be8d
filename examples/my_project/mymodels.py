"""A user's own models: plain NumPyro functions, no runner imports needed.

    python -m runner model=fn model.fn=mymodels.eight_schools data=json data.path=eight_schools.json guide=autonormal
    python -m runner --config-dir conf model=eight_schools inference=nuts
    python -m runner --config-dir conf model=regression guide=automvn
"""
import numpyro
import numpyro.distributions as dist


def eight_schools(J, sigma, y=None):
    """Eight schools, non-centred (posteriordb: eight_schools-eight_schools_noncentered)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", J):
        theta_tilde = numpyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * theta_tilde)
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def regression(x, y=None):
    """Linear regression y ~ Normal(alpha + beta x, sigma) with weak priors."""
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 10.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(5.0))
    with numpyro.plate("N", x.shape[0]):
        numpyro.sample("y", dist.Normal(alpha + beta * x, sigma), obs=y)
