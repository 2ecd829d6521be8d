"""inference=nuts: NUTS over the continuous latent sites with the discrete ones enumerated out
(the GMM tutorial's collapsed NUTS); chains are one vectorised program."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runner import schema
from runner.errors import ConfigError
from runner.inference.base import Method, Report

KEY_DERIVATION = "root=PRNGKey(seed); MCMC.run(root) (chains split from it)"


@dataclass
class NUTS(Method):
    """conf/inference/nuts.yaml (ranges: runner/schema.py)."""
    name = "nuts"
    warmup: int = schema.setting(50, schema.integer(0))
    samples: int = schema.setting(250, schema.positive_int)
    chains: int = schema.setting(1, schema.positive_int)  # one vectorised program (chain_method=vectorized)
    target_accept: float = schema.setting(0.8, schema.probability)
    # median (init_to_median) | uniform (NumPyro's default) | sample
    init: str = schema.setting("median", schema.one_of("median", "uniform", "sample"))

    def prepare(self, cfg, model, data) -> None:
        if cfg.replicates != 1:
            raise ConfigError("replicates applies to inference=svi; for inference=nuts sweep seeds with -m seed=0,1,...")

    def fit(self, exp, progress=None):
        return fit_nuts(exp)

    def outputs(self, exp, result, run_dir: Path) -> Report:
        return outputs(exp, result, run_dir)


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
    from numpyro.infer import NUTS as numpyro_nuts
    from numpyro.infer import MCMC, init_to_median, init_to_sample, init_to_uniform

    nuts = exp.inference
    init = {"median": init_to_median, "uniform": init_to_uniform, "sample": init_to_sample}[nuts.init]
    kernel = numpyro_nuts(exp.model, target_accept_prob=float(nuts.target_accept), init_strategy=init)
    mcmc = MCMC(kernel, num_warmup=nuts.warmup, num_samples=nuts.samples, num_chains=nuts.chains,
                chain_method="vectorized", progress_bar=False)
    args = () if exp.data is None else (exp.data,)
    mcmc.run(jax.random.PRNGKey(exp.seed), *args, extra_fields=("diverging",))
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    diverging = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    return NUTSResult(samples=samples, summary=summary(samples, group_by_chain=True), divergences=diverging)


def outputs(exp, res: NUTSResult, run_dir: Path) -> Report:
    import jax

    from runner import figures, posterior
    from runner.inference.latents import discrete_outputs
    from runner.outputs import write_json, write_metrics, write_posterior

    scalars = {"divergences": res.divergences}
    summary = posterior.summarize(res.samples, list(res.samples), by_chain=True)
    for name, stats in summary.items():
        scalars[f"r_hat/{name}"] = float(np.nanmax(stats["r_hat"]))
        scalars[f"n_eff/{name}"] = float(np.nanmin(stats["n_eff"]))
    scalars.update(posterior.summary_metrics(summary))
    artifacts = ["config.yaml", "metrics.json", write_json(run_dir / "summary.json", summary)]
    flat = res.flat()
    draws = dict(flat)
    artifacts += discrete_outputs(exp, res.means(), run_dir, scalars)
    write_metrics(run_dir, scalars, {})  # after discrete_outputs: avg_loglik included
    if exp.posterior_samples:
        draws.update(posterior.predictive_draws(exp.model, exp.data, exp.posterior_samples,
                                                jax.random.PRNGKey(exp.seed + 2**20), posterior=draws))
        artifacts += write_posterior(exp, draws, run_dir)
    else:
        np.savez_compressed(run_dir / "posterior.npz", **draws)
        artifacts.append("posterior.npz")
    from runner import inference_data

    observed = set(posterior.observed_sites(exp.model, exp.data)) if exp.data is not None else set()
    artifacts += inference_data.write(exp, run_dir, res.samples, chains=True,
                                      predictive={k: v for k, v in draws.items() if k in observed}
                                      if exp.posterior_samples else None)
    if figures.trace_plot(res.samples, run_dir / "plots" / "trace.png"):
        artifacts.append("plots/trace.png")
    if figures.components_plot(exp.model, flat, exp.data, run_dir / f"plots/{exp.model.name}.png"):
        artifacts.append(f"plots/{exp.model.name}.png")
    worst = max((v for k, v in scalars.items() if k.startswith("r_hat/")), default=float("nan"))
    nuts = exp.inference
    line = f"samples={nuts.samples}x{nuts.chains} max_r_hat={worst:.4g} divergences={res.divergences}"
    return Report(scalars=scalars, curves={}, artifacts=artifacts, line=line,
                  key_derivation=KEY_DERIVATION, result=res, predictable=exp.data is not None)
