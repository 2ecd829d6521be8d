"""inference=nuts: NUTS over the continuous latent sites with the discrete ones enumerated out
(the GMM tutorial's collapsed NUTS); chains are one vectorised program."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KEY_DERIVATION = "root=PRNGKey(seed); MCMC.run(root) (chains split from it)"


@dataclass
class NUTSResult:
    samples: dict  # site -> (chains, samples, ...)
    summary: dict  # site -> numpyro.diagnostics.summary statistics (mean, n_eff, r_hat, ...)
    divergences: int

    def flat(self) -> dict:
        return {k: v.reshape(-1, *v.shape[2:]) for k, v in self.samples.items()}

    def means(self) -> dict:
        return {k: np.asarray(v.mean(axis=(0, 1))) for k, v in self.samples.items()}


def fit_nuts(exp) -> NUTSResult:
    import jax
    from numpyro.diagnostics import summary
    from numpyro.infer import MCMC, NUTS, init_to_median, init_to_sample, init_to_uniform

    inf = exp.inference
    init = {"median": init_to_median, "uniform": init_to_uniform, "sample": init_to_sample}[inf.get("init", "median")]
    kernel = NUTS(exp.model, target_accept_prob=float(inf.get("target_accept", 0.8)), init_strategy=init)
    mcmc = MCMC(kernel, num_warmup=inf["warmup"], num_samples=inf["samples"], num_chains=inf["chains"],
                chain_method="vectorized", progress_bar=False)
    args = () if exp.data is None else (exp.data,)
    mcmc.run(jax.random.PRNGKey(exp.seed), *args, extra_fields=("diverging",))
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    diverging = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    return NUTSResult(samples=samples, summary=summary(samples, group_by_chain=True), divergences=diverging)
