"""inference=nuts: NUTS over the continuous latent sites with the discrete ones enumerated out
(the GMM tutorial's collapsed NUTS); chains are one vectorised program."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runner import schema
from runner.errors import ConfigError
from runner.inference.base import START_REMEDIES, FitOutput, Method, start_failure

KEY_DERIVATION = "root=PRNGKey(seed); MCMC.run(root) (chains split from it)"


@dataclass
class NUTS(Method):
    """conf/inference/nuts.yaml (ranges: runner/schema.py). The defaults are NumPyro's and Stan's
    (4 chains, 1000 warmup steps, 1000 draws); a model's `hints` may set its own (model=gmm: the
    tutorial's 50, 250, 1)."""
    name = "nuts"
    warmup: int = schema.setting(1000, schema.integer(0))
    samples: int = schema.setting(1000, schema.positive_int)
    chains: int = schema.setting(4, schema.positive_int)  # one vectorised program (chain_method=vectorized)
    target_accept: float = schema.setting(0.8, schema.probability)
    # median (init_to_median) | uniform (NumPyro's default) | sample
    init: str = schema.setting("median", schema.one_of("median", "uniform", "sample"))

    def prepare(self, cfg, model, data) -> None:
        if cfg.replicates != 1:
            raise ConfigError("replicates applies to inference=svi; for inference=nuts sweep seeds with -m seed=0,1,...")
        from runner.inference.budget import check_bytes
        from runner.posterior import draw_bytes, roles

        # kept per draw: the unconstrained state in NumPyro's sample loop and its per-draw fields
        # (potential energy, divergence, steps, acceptance), the constrained latent and deterministic
        # sites, their float64 copies for the diagnostics, the summary's and the files' copies.
        # Measured: the tutorial GMM's peak RSS grows 405 bytes per draw (0.73 GB from 2e5 to 2e6
        # samples) for 20 bytes of sites: 16 copies + 128 bytes (x3 of the sites let samples=1e8 through)
        kept = roles(model, data)
        per_draw = 16 * draw_bytes(model, data, [*kept.latent, *kept.deterministic]) + 128
        check_bytes(int(self.chains) * int(self.samples) * per_draw, f"inference=nuts ({self.chains} chains x "
                    f"{self.samples} samples)", "fewer inference.samples or inference.chains")

    def fit(self, exp, context=None) -> FitOutput:
        return output(exp, fit_nuts(exp))

    def kernel(self, model):
        """NumPyro's NUTS kernel of `model` with these settings (target_accept, init)."""
        from numpyro.infer import NUTS as numpyro_nuts
        from numpyro.infer import init_to_median, init_to_sample, init_to_uniform

        init = {"median": init_to_median, "uniform": init_to_uniform, "sample": init_to_sample}[self.init]
        return numpyro_nuts(model, target_accept_prob=float(self.target_accept), init_strategy=init)

    def simulation_fit(self, exp):
        """NUTS on one data set as a pure function (root, data) -> site -> (chains x samples, ...)
        draws: NumPyro's kernel initialised and stepped (warmup adapting) inside the function, its
        chains vmapped as chain_method=vectorized does; a calibration vmaps it over simulated data
        sets (runner/check/sbc.py)."""
        import jax

        model, warmup, samples, chains = exp.model, self.warmup, self.samples, self.chains

        def chain(key, data):
            kernel = self.kernel(model)
            args = (data,)
            k_init, k_run = jax.random.split(key)
            state = kernel.init(k_init, warmup, None, args, {})
            state = state._replace(rng_key=k_run)
            state = jax.lax.fori_loop(0, warmup, lambda i, s: kernel.sample(s, args, {}), state)

            def draw(s, _):
                s = kernel.sample(s, args, {})
                return s, s.z

            _, zs = jax.lax.scan(draw, state, None, length=samples)
            return jax.vmap(kernel.postprocess_fn(args, {}))(zs)

        def fit_one(root, data):
            draws = jax.vmap(chain, (0, None))(jax.random.split(root, chains), data)
            return {k: v.reshape(chains * samples, *v.shape[2:]) for k, v in draws.items()}

        return fit_one

    def extras(self, exp, out: FitOutput, run_dir: Path) -> list[str]:
        from runner import figures

        return ["plots/trace.png"] if figures.trace_plot(out.draws, run_dir / "plots" / "trace.png") else []


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
    import warnings

    import jax
    from numpyro.diagnostics import summary
    from numpyro.infer import MCMC

    nuts = exp.inference
    mcmc = MCMC(nuts.kernel(exp.model), num_warmup=nuts.warmup, num_samples=nuts.samples, num_chains=nuts.chains,
                chain_method="vectorized", progress_bar=False)
    args = () if exp.data is None else (exp.data,)
    try:
        mcmc.run(jax.random.PRNGKey(exp.seed), *args, extra_fields=("diverging",))
    except (RuntimeError, ValueError) as e:
        failure = start_failure(e, exp.model.name, "nuts", f"{START_REMEDIES}, or inference.init=uniform|sample")
        if failure is None:
            raise
        raise failure from None
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    diverging = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    with warnings.catch_warnings():  # n_eff of a site without spread divides by 0
        warnings.simplefilter("ignore", RuntimeWarning)
        stats = summary({k: v.astype(np.float64) for k, v in samples.items()}, group_by_chain=True)
    return NUTSResult(samples=samples, summary=stats, divergences=diverging)


def output(exp, res: NUTSResult) -> FitOutput:
    """NUTS's fit as every method's: its chains, their means as the point estimate, the
    divergences, each site's worst R-hat and effective sample size, and the verdict on them
    (runner/inference/diagnostics.py `nuts_verdict`: the tag `nuts_verdict`, and the result line)."""
    from runner.inference.diagnostics import nuts_verdict
    from runner.posterior import latent_sites

    scalars = {"divergences": res.divergences}
    for name, stats in res.summary.items():
        scalars[f"r_hat/{name}"] = float(np.nanmax(stats["r_hat"]))
        scalars[f"n_eff/{name}"] = float(np.nanmin(stats["n_eff"]))
    worst = np.nanmax([v for k, v in scalars.items() if k.startswith("r_hat/")] or [np.nan])
    fewest = np.nanmin([v for k, v in scalars.items() if k.startswith("n_eff/")] or [np.nan])
    scalars.update({"max_r_hat": float(worst), "min_n_eff": float(fewest)})
    nuts, latent = exp.inference, latent_sites(exp.model, exp.data)
    verdict, why = nuts_verdict(float(worst), float(fewest), res.divergences, nuts)
    tags = {"nuts_verdict": verdict, **({"nuts_advice": why} if why else {})}
    means = {k: v for k, v in res.means().items() if k in latent}  # its deterministic sites follow from them
    line = (f"samples={nuts.samples}x{nuts.chains} max_r_hat={worst:.4g} min_n_eff={fewest:.4g} "
            f"divergences={res.divergences} ({verdict}{': ' + why if why else ''})")
    return FitOutput(method="nuts", scalars=scalars, draws=res.samples, markov=True, latents=means, line=line,
                     key_derivation=KEY_DERIVATION, tags=tags, extras=res)
