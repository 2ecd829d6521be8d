"""Seed 004's 2-D multimodal factor model: two modes along u1 = (x+y)/sqrt2, Cauchy along u2."""
from __future__ import annotations

import numpy as np

from runner.models.base import Model
from runner.models.drawing import density_with_samples


class Multimodal(Model):
    name = "multimodal"
    needs_data = False
    manual_guides = {"mixture": "runner.guides.multimodal.mixture_guide"}

    def __init__(self, sig1: float = 0.5, sig2: float = 2.0, b: float = 5.0, bound: float = 20.0):
        self.sig1, self.sig2, self.b, self.bound = float(sig1), float(sig2), float(b), float(bound)

    def log_density(self, x, y, xp=None):
        """log(f1 + f2) computed as logaddexp: the seed's log(exp(a)+exp(b)) is -inf in float32
        a few units away from the modes, which makes any wide guide's loss infinite."""
        if xp is None:
            import jax.numpy as xp
        sqrt2 = 2**0.5
        a = -0.5 * (((x + y) / sqrt2 - self.b) / self.sig1) ** 2
        c = -0.5 * (((x + y) / sqrt2 + self.b) / self.sig1) ** 2
        return xp.logaddexp(a, c) - xp.log1p(((x - y) / self.sig2 / sqrt2) ** 2 / 2)

    def __call__(self, data=None):
        import numpyro
        import numpyro.distributions as dist

        x = numpyro.sample("x", dist.Uniform(-self.bound, self.bound))
        y = numpyro.sample("y", dist.Uniform(-self.bound, self.bound))
        numpyro.factor("logfac", self.log_density(x, y))

    def figure(self, fig, samples, data):
        density_with_samples(fig, lambda X, Y: self.log_density(X, Y, xp=np), samples,
                             (-self.bound, self.bound), "True density and guide samples")
