"""NumPyro's examples/zero_inflated_poisson.py (https://github.com/pyro-ppl/numpyro @ 0b935d488056ae1775b4ab05cbe2812f51f21a4f):
its model function(s) copied verbatim; its imports trimmed to what they use."""
import jax.numpy as jnp
import jax.scipy as jsp

import numpyro
import numpyro.distributions as dist


# examples/zero_inflated_poisson.py @ 0b935d48 (its data are downloaded: data/zip.json is simulated from the model)
def model(X, Y):
    D_X = X.shape[1]
    b1 = numpyro.sample("b1", dist.Normal(0.0, 1.0).expand([D_X]).to_event(1))
    b2 = numpyro.sample("b2", dist.Normal(0.0, 1.0).expand([D_X]).to_event(1))

    q = jsp.special.expit(jnp.dot(X, b1[:, None])).reshape(-1)
    lam = jnp.exp(jnp.dot(X, b2[:, None]).reshape(-1))

    with numpyro.plate("obs", X.shape[0]):
        numpyro.sample("Y", dist.ZeroInflatedPoisson(gate=q, rate=lam), obs=Y)
