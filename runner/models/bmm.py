"""Bernoulli mixture model (seed 003) for binary vectors, e.g. binarised digit images."""
from __future__ import annotations

import numpy as np

from runner.models.base import Model
from runner.models.drawing import image_grid
from runner import schema
from runner.errors import ConfigError


class BMM(Model):
    name = "bmm"
    enumerated = True
    EPS = 1e-6  # EM keeps pixel probabilities in [EPS, 1 - EPS]

    def __init__(self, K: int = 10):
        self.K = schema.integer(2).about("the mixture's components")("model.K", K)

    def __call__(self, data=None):
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as dist

        from runner.models.components import BernoulliComponents

        D = data.shape[-1]
        weights = numpyro.sample("weights", dist.Dirichlet(jnp.ones(self.K)))
        with numpyro.plate("components", self.K):
            probs = numpyro.sample("probs", dist.Beta(1.0, 1.0).expand([D]).to_event(1))
        with numpyro.plate("data", data.shape[0]):
            assignment = numpyro.sample(
                "assignment", dist.Categorical(weights), infer={"enumerate": "parallel"}
            )
            # the (N, K) log-likelihood table as matrix products, never N x K x D
            numpyro.sample("obs", BernoulliComponents(probs, assignment), obs=data)

    def check_data(self, data) -> None:
        super().check_data(data)
        if data.ndim != 2 or data.shape[0] == 0:
            raise ConfigError(f"model 'bmm' needs data of shape (N, D), got {data.shape}")
        if not np.isin(np.asarray(data), (0, 1)).all():
            raise ConfigError("model 'bmm' needs binary data: set data.binarize=<threshold>")

    def check_fit_data(self, data) -> None:
        if self.K > data.shape[0]:
            raise ConfigError(f"model.K={self.K} is larger than the number of data points ({data.shape[0]})")

    def init_values(self, key, data):
        """Equal weights; component probabilities at random data points, pulled toward 0.5."""
        import jax
        import jax.numpy as jnp

        n = data.shape[0]
        idx = jax.random.categorical(key, jnp.ones(n) / n, shape=(self.K,))
        return {"weights": jnp.ones(self.K) / self.K, "probs": 0.25 + 0.5 * data[idx]}

    def em_init(self, key, data, reg):
        import jax
        import jax.numpy as jnp

        idx = jax.random.choice(key, data.shape[0], (self.K,), replace=False)
        return {"weights": jnp.ones(self.K) / self.K, "probs": 0.25 + 0.5 * data[idx]}

    def em_log_joint(self, params, data):
        import jax.numpy as jnp

        from runner.models.components import bernoulli_table

        return jnp.log(params["weights"]) + bernoulli_table(data, params["probs"])

    def em_m_step(self, resp, data, reg):
        import jax.numpy as jnp

        nk = resp.sum(0) + 10 * jnp.finfo(data.dtype).eps
        probs = jnp.clip(resp.T @ data / nk[:, None], self.EPS, 1 - self.EPS)
        return {"weights": nk / data.shape[0], "probs": probs}

    def em_params(self, latents):
        import jax.numpy as jnp

        return {"weights": jnp.asarray(latents["weights"]),
                "probs": jnp.clip(jnp.asarray(latents["probs"]), self.EPS, 1 - self.EPS)}

    def figure(self, fig, samples, data):
        image_grid(fig, np.median(samples["probs"], axis=0), np.median(samples["weights"], axis=0),
                   data.shape[-1])
