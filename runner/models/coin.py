"""Coin fairness (seed 004): Uniform prior, Bernoulli tosses; the posterior is Beta(1+heads, 1+tails)."""
from __future__ import annotations

import numpy as np

from runner.models.base import Model
from runner.errors import ConfigError


class Coin(Model):
    name = "coin"
    manual_guides = {"beta": "runner.guides.coin.beta_guide", "normal": "runner.guides.coin.normal_guide"}

    def __call__(self, data=None):
        import numpyro
        import numpyro.distributions as dist

        f = numpyro.sample("latent_fairness", dist.Uniform(0.0, 1.0))
        with numpyro.plate("N", data.shape[0]):
            numpyro.sample("obs", dist.Bernoulli(f), obs=data)

    def check_data(self, data) -> None:
        super().check_data(data)
        if data.ndim != 1 or data.size == 0 or not np.isin(np.asarray(data), (0, 1)).all():
            raise ConfigError("model 'coin' needs a non-empty 1-D array of 0/1 tosses")

    @staticmethod
    def analytic_posterior(data) -> tuple[float, float]:
        heads = float(np.sum(data))
        return 1.0 + heads, 1.0 + float(len(data)) - heads

    @staticmethod
    def beta_pdf(x: np.ndarray, a: float, b: float) -> np.ndarray:
        """Beta(a, b)'s density (math.lgamma: scipy.stats costs a run ~0.8 s of import for one curve)."""
        import math

        with np.errstate(divide="ignore", invalid="ignore"):
            log = np.full(np.shape(x), math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b))
            log += (a - 1) * np.log(x) if a != 1 else 0.0  # 0 log 0 = 0: Beta(1, b) at x = 0
            log += (b - 1) * np.log1p(-x) if b != 1 else 0.0
        return np.exp(log)

    def figure(self, fig, samples, data):
        a, b = self.analytic_posterior(np.asarray(data))
        ax = fig.subplots()
        X = np.linspace(0, 1, 256)
        ax.hist(np.asarray(samples["latent_fairness"]), bins=64, range=(0, 1), density=True,
                histtype="step", lw=1.5, label="guide samples")
        ax.plot(X, self.beta_pdf(X, a, b), label=f"analytic Beta({a:g}, {b:g})")
        ax.set_xlabel("latent fairness f")
        ax.set_title("Coin posterior: guide vs analytic")
        ax.legend()
