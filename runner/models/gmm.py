"""Gaussian mixture model of NumPyro's GMM tutorial (seed 000), for 1-D or D-dimensional data."""
from __future__ import annotations

import numpy as np

from runner.models.base import Model
from runner.models.drawing import image_grid, normal_pdf
from runner import schema
from runner.errors import ConfigError


class GMM(Model):
    name = "gmm"
    enumerated = True
    manual_guides = {"full": "runner.guides.gmm.full_guide"}

    def __init__(self, K: int = 2, prior_loc_scale: float = 10.0, weight_concentration: float = 0.5,
                 scale: float | None = None):
        self.K = schema.positive_int.about("the mixture's components")("model.K", K)
        #: None: the scale is a latent site (the tutorial). A number: a fixed known scale, as seed
        #: 003's SGD fit (0.2 on images, where a learned scale of a constant pixel collapses to 0).
        scale = schema.optional(schema.positive)("model.scale", scale)
        self.fixed_scale = None if scale is None else float(scale)
        self.prior_loc_scale = float(prior_loc_scale)
        self.weight_concentration = float(weight_concentration)

    def __call__(self, data=None):
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as dist

        from runner.models.components import DiagNormalComponents

        K = self.K
        # K=1: one Gaussian, whose weight is 1 (a Dirichlet over one component has no free value)
        weights = (numpyro.sample("weights", dist.Dirichlet(self.weight_concentration * jnp.ones(K)))
                   if K > 1 else jnp.ones(1))
        one_d = data.ndim == 1
        fixed = self.fixed_scale
        # K=1 has no plate of components and no assignment site: under enumeration a dimension
        # of size 1 is a broadcast one, so NumPyro's funsor code cannot tell it from none
        if one_d:  # exactly the tutorial's model
            scale = numpyro.sample("scale", dist.LogNormal(0.0, 2.0)) if fixed is None else fixed
            if K == 1:
                locs = numpyro.sample("locs", dist.Normal(0.0, self.prior_loc_scale).expand([1]).to_event(1))
            else:
                with numpyro.plate("components", K):
                    locs = numpyro.sample("locs", dist.Normal(0.0, self.prior_loc_scale))
        else:  # diagonal covariance shared by the components, as in seed 003's GMM
            D = data.shape[-1]
            scale = (numpyro.sample("scale", dist.LogNormal(0.0, 2.0).expand([D]).to_event(1))
                     if fixed is None else fixed)
            if K == 1:
                locs = numpyro.sample("locs", dist.Normal(0.0, self.prior_loc_scale).expand([1, D]).to_event(2))
            else:
                with numpyro.plate("components", K):
                    locs = numpyro.sample(
                        "locs", dist.Normal(0.0, self.prior_loc_scale).expand([D]).to_event(1)
                    )
        with numpyro.plate("data", data.shape[0]):
            assignment = numpyro.sample(
                "assignment", dist.Categorical(weights), infer={"enumerate": "parallel"}
            ) if K > 1 else jnp.zeros(data.shape[0], dtype=jnp.int32)
            if one_d:
                numpyro.sample("obs", dist.Normal(locs[assignment], scale), obs=data)
            else:  # the (N, K) log-likelihood table as matrix products, never N x K x D
                numpyro.sample("obs", DiagNormalComponents(locs, scale, assignment), obs=data)

    def check_data(self, data) -> None:
        super().check_data(data)
        if data.ndim not in (1, 2) or data.shape[0] == 0:
            raise ConfigError(f"model 'gmm' needs data of shape (N,) or (N, D), got {data.shape}")

    def check_fit_data(self, data) -> None:
        if self.K > data.shape[0]:
            raise ConfigError(f"model.K={self.K} is larger than the number of data points ({data.shape[0]})")

    def init_values(self, key, data):
        """The tutorial's initialisation: equal weights, scale sqrt(var/2), locs at random data points."""
        import jax
        import jax.numpy as jnp

        n = data.shape[0]
        idx = jax.random.categorical(key, jnp.ones(n) / n, shape=(self.K,))
        scale = jnp.sqrt(data.var(axis=0) / 2)
        values = {**({"weights": jnp.ones(self.K) / self.K} if self.K > 1 else {}), "locs": data[idx],
                  "scale": jnp.maximum(scale, 1e-2) if data.ndim > 1 else scale}
        if self.fixed_scale is not None:
            values["scale"] = jnp.full_like(values["scale"], self.fixed_scale)
        return values

    # EM: scikit-learn's GaussianMixture(covariance_type="diag"): per-component diagonal variances
    # (the SVI model shares one diagonal scale; em_params broadcasts it to every component).
    def em_init(self, key, data, reg):
        import jax
        import jax.numpy as jnp

        X = data.reshape(data.shape[0], -1)
        idx = jax.random.choice(key, X.shape[0], (self.K,), replace=False)
        return {"weights": jnp.ones(self.K) / self.K, "locs": X[idx],
                "variances": jnp.broadcast_to(X.var(axis=0) + reg, (self.K, X.shape[1]))}

    def em_log_joint(self, params, data):
        import jax.numpy as jnp

        X = data.reshape(data.shape[0], -1)
        prec = 1.0 / params["variances"]  # (K, D): per-component diagonal precisions; (N, K) by matmuls
        locs = params["locs"]
        quad = jnp.square(X) @ prec.T - 2 * X @ (locs * prec).T + jnp.sum(jnp.square(locs) * prec, -1)
        log_det = jnp.sum(jnp.log(params["variances"]), -1)
        return jnp.log(params["weights"]) - 0.5 * (X.shape[1] * jnp.log(2 * jnp.pi) + log_det + quad)

    def em_m_step(self, resp, data, reg):
        import jax.numpy as jnp

        X = data.reshape(data.shape[0], -1)
        nk = resp.sum(0) + 10 * jnp.finfo(X.dtype).eps
        locs = resp.T @ X / nk[:, None]
        # sum_n r_nk (x_nd - mu_kd)^2 / n_k as matrix products (scikit-learn's diagonal estimate)
        variances = resp.T @ jnp.square(X) / nk[:, None] - jnp.square(locs) + reg
        variances = jnp.maximum(variances, reg)
        return {"weights": nk / X.shape[0], "locs": locs, "variances": variances}

    def em_params(self, latents):
        import jax.numpy as jnp

        locs = jnp.asarray(latents["locs"]).reshape(self.K, -1)
        # floored at EM's default reg_covar: SVI can shrink the scale of a constant pixel to 0
        scale = jnp.asarray(latents["scale"] if self.fixed_scale is None else self.fixed_scale)
        var = jnp.broadcast_to(jnp.maximum(scale ** 2, 1e-6), locs.shape)
        return {"weights": jnp.asarray(latents["weights"]) if "weights" in latents else jnp.ones(self.K),
                "locs": locs, "variances": var}

    def figure(self, fig, samples, data):
        weights = np.median(samples["weights"], axis=0) if "weights" in samples else np.ones(self.K)
        locs = np.median(samples["locs"], axis=0)
        scale = np.median(samples["scale"], axis=0) if "scale" in samples else self.fixed_scale
        if data.ndim > 1:
            image_grid(fig, locs, weights, data.shape[-1])
            return
        ax = fig.subplots()
        lo, hi = float(data.min()), float(data.max())
        pad = 0.3 * (hi - lo) + 3 * float(scale)
        X = np.linspace(lo - pad, hi + pad, 400)
        total = np.zeros_like(X)
        for k in range(self.K):
            Y = weights[k] * normal_pdf(X, locs[k], scale)
            total += Y
            ax.plot(X, Y, label=f"component {k}: w={weights[k]:.3f}, loc={locs[k]:.2f}")
        ax.plot(X, total, "k--", label="mixture")
        ax.plot(data, np.zeros(len(data)), "k*", markersize=10, label="data")
        ax.set_title(f"Fitted mixture density (scale={float(scale):.3f})")
        ax.set_ylabel("probability density")
        ax.legend(fontsize=8)
