"""Seed 004's rotated 2-D Gaussian with improper flat priors (sigma = (1, 3), theta = 45 degrees)."""
from __future__ import annotations

import math

import numpy as np

from runner.models.base import Model
from runner.models.drawing import density_with_samples


class Gaussian2D(Model):
    name = "gaussian2d"
    needs_data = False

    def __init__(self, sig1: float = 1.0, sig2: float = 3.0, theta_deg: float = 45.0):
        self.sig1, self.sig2 = float(sig1), float(sig2)
        self.theta = math.radians(float(theta_deg))

    def log_density(self, x, y):
        c, s = math.cos(self.theta), math.sin(self.theta)
        return -0.5 * (((c * x - s * y) / self.sig1) ** 2 + ((s * x + c * y) / self.sig2) ** 2)

    def __call__(self, data=None):
        import numpyro
        import numpyro.distributions as dist
        from numpyro.distributions import constraints

        x = numpyro.sample("x", dist.ImproperUniform(constraints.real, (), ()))
        y = numpyro.sample("y", dist.ImproperUniform(constraints.real, (), ()))
        numpyro.factor("logfac", self.log_density(x, y))

    def figure(self, fig, samples, data):
        half = 3.5 * max(self.sig1, self.sig2)
        density_with_samples(fig, self.log_density, samples, (-half, half),
                             "True density and guide samples")


def principal_axes(cov) -> tuple[np.ndarray, float]:
    """Principal sigmas (ascending) and the angle in degrees of the smallest one's axis,
    folded into (-90, 90], as seed 004 reads them off the guide covariance."""
    vals, vecs = np.linalg.eigh(np.asarray(cov, dtype=float))
    u = vecs[:, 0]
    angle = math.degrees(math.atan2(u[1], u[0]))
    angle = (angle + 90.0) % 180.0 - 90.0
    return np.sqrt(vals), angle
