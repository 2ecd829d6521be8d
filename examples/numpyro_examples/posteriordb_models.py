"""posteriordb posteriors (https://github.com/stan-dev/posteriordb @ 28f8d3d6e975315f42aa274a8399f21e07a43b30),
each written here as the NumPyro equivalent of its Stan model (posterior_database/models/stan/<name>.stan);
the data are posteriordb's own JSON files as they are (data/<data_name>.json), and the truth its
reference draws (reference_posteriors/draws/draws/<posterior>.json.zip).

    python -m runner model=fn model.fn=posteriordb_models.earn_height data=json data.path=data/earnings.json inference=nuts

Stan's flat priors (a parameter with no sampling statement) are ImproperUniform here; a Stan
`real<lower=0>` with cauchy(0, s) is a HalfCauchy(s).
"""
import jax.numpy as jnp

import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints


def _flat(shape=()):
    return dist.ImproperUniform(constraints.real, (), shape)


def _flat_positive():
    return dist.ImproperUniform(constraints.positive, (), ())


def earn_height(N, earn, height):
    """earnings-earn_height (earn_height.stan): badly scaled (earn in dollars), flat priors."""
    beta = numpyro.sample("beta", _flat((2,)))
    sigma = numpyro.sample("sigma", _flat_positive())
    with numpyro.plate("N", N):
        numpyro.sample("earn", dist.Normal(beta[0] + beta[1] * height, sigma), obs=earn)


def kidscore_momiq(N, kid_score, mom_iq):
    """kidiq-kidscore_momiq (kidscore_momiq.stan)."""
    beta = numpyro.sample("beta", _flat((2,)))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    with numpyro.plate("N", N):
        numpyro.sample("kid_score", dist.Normal(beta[0] + beta[1] * mom_iq, sigma), obs=kid_score)


def logmesquite(N, weight, diam1, diam2, canopy_height, total_height, density, group):
    """mesquite-logmesquite (logmesquite.stan): log-log regression, flat priors."""
    beta = numpyro.sample("beta", _flat((7,)))
    sigma = numpyro.sample("sigma", _flat_positive())
    mu = (beta[0] + beta[1] * jnp.log(diam1) + beta[2] * jnp.log(diam2)
          + beta[3] * jnp.log(canopy_height) + beta[4] * jnp.log(total_height)
          + beta[5] * jnp.log(density) + beta[6] * group)
    with numpyro.plate("N", N):
        numpyro.sample("log_weight", dist.Normal(mu, sigma), obs=jnp.log(weight))


def eight_schools_noncentered(J, y, sigma):
    """eight_schools-eight_schools_noncentered (eight_schools_noncentered.stan)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", J):
        theta_trans = numpyro.sample("theta_trans", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", theta_trans * tau + mu)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def gp_pois_regr(N, x, k):
    """gp_pois_regr-gp_pois_regr (gp_pois_regr.stan): a latent GP with a Poisson likelihood; its
    Cholesky factor of a squared-exponential kernel with a 1e-10 jitter needs float64."""
    rho = numpyro.sample("rho", dist.Gamma(25.0, 4.0))
    alpha = numpyro.sample("alpha", dist.HalfNormal(2.0))
    f_tilde = numpyro.sample("f_tilde", dist.Normal(jnp.zeros(N), 1.0))
    x = jnp.asarray(x)
    cov = alpha**2 * jnp.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / rho**2) + 1e-10 * jnp.eye(N)
    f = numpyro.deterministic("f", jnp.linalg.cholesky(cov) @ f_tilde)
    numpyro.sample("k", dist.Poisson(jnp.exp(f)), obs=k)
