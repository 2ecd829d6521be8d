"""SBC's rank statistics and their verdict (Talts et al. 2018; Säilynoja et al. 2022).

The rank of a true value among L posterior draws is uniform on {0..L} when the inference is
calibrated. Each element's normalised rank u = (rank + v) / (L + 1), v ~ Uniform(0, 1) (a randomised
rank, from a fixed seed: u is then exactly uniform for any L, not only for many draws), is compared
with the uniform distribution by its ECDF and ArviZ's simultaneous band (`arviz.stats.ecdf_utils.ecdf_confidence_band`,
the optimised band of Säilynoja et al.); the band's level `prob` holds for all ranked elements
together (Bonferroni over them: eight schools' ten elements are not ten chances of a false alarm).

Verdict of an element whose ECDF stays inside the band: calibrated. Otherwise the larger of two
standardised departures names it:
- bias: the mean of u against 1/2 (z = (mean - 1/2) / sqrt(1/12 / S)); mean > 1/2: the true values
  sit above the posterior (it is biased low), < 1/2: biased high;
- dispersion: the variance of u against 1/12 (z = (var - 1/12) / sqrt(1/180 / S), the sampling sd of
  a uniform's variance): > 1/12 is a U shape, ranks at the extremes, the posterior too narrow
  (underdispersed); < 1/12 a hump, the posterior too wide (overdispersed).
A site's verdict is its elements' most frequent miscalibration (calibrated only if all are).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

UNIFORM_VAR = 1 / 12
VAR_OF_VAR = 1 / 180  # Var((U - 1/2)^2) = 1/80 - 1/144: the sampling variance of a uniform's variance, times S
EVAL_POINTS = 99  # where the ECDF is compared with its band (interior points of [0, 1])
MAX_ELEMENTS = 16  # per site, elements with their own metrics and curves in the plot


def rank(truth, draws):
    """(S, ...) ranks of the true values among their (S, L, ...) draws (NaN where a fit failed:
    its draws are not finite)."""
    truth, draws = np.asarray(truth, dtype=float), np.asarray(draws, dtype=float)
    out = (draws < truth[:, None]).sum(axis=1).astype(float)
    out[~np.isfinite(draws).all(axis=1) | ~np.isfinite(truth)] = np.nan
    return out


@dataclass
class Site:
    """One latent site: its elements' normalised ranks (S, m) and verdicts."""
    u: np.ndarray  # (S, m) normalised ranks of the finite simulations
    verdicts: list  # per element
    outside: np.ndarray  # (m,) share of the evaluation points where the ECDF leaves the band
    mean: np.ndarray  # (m,) mean of u
    var: np.ndarray  # (m,) variance of u
    z_mean: np.ndarray
    z_var: np.ndarray
    failed: int  # simulations whose fit failed (not ranked)

    @property
    def verdict(self) -> str:
        bad = [v for v in self.verdicts if v != "calibrated"]
        if not bad:
            return "calibrated"
        return Counter(bad).most_common(1)[0][0]

    def words(self, name: str) -> str:
        """`theta: underdispersed (3/8 elements; outside band 41%, rank mean 0.502 vs 0.5, var 0.161 vs 0.0833)`."""
        m = len(self.verdicts)
        count = "" if m == 1 else f"{sum(v == self.verdict for v in self.verdicts)}/{m} elements; "
        worst = int(np.argmax(self.outside))
        return (f"{name}: {self.verdict} ({count}outside band {self.outside[worst]:.0%}, rank mean "
                f"{self.mean.mean():.3f} vs 0.5, var {self.var.mean():.4f} vs {UNIFORM_VAR:.4f})")


@dataclass
class Report:
    sites: dict  # name -> Site
    draws: int  # L
    prob: float  # the band's level over all elements
    eval_points: np.ndarray = field(default=None)
    lower: np.ndarray = field(default=None)  # the band of the ECDF at eval_points
    upper: np.ndarray = field(default=None)

    @property
    def verdict(self) -> str:
        bad = {n: s.verdict for n, s in self.sites.items() if s.verdict != "calibrated"}
        return "calibrated" if not bad else ", ".join(f"{n} {v}" for n, v in bad.items())

    @classmethod
    def of(cls, ranks: dict, draws: int, prob: float) -> "Report":
        """The verdicts of `ranks` (site -> (S, ...) ranks among `draws` draws)."""
        flat = {n: np.asarray(r, dtype=float).reshape(len(r), -1) for n, r in ranks.items()}
        elements = sum(r.shape[1] for r in flat.values())
        each = 1 - (1 - prob) / max(elements, 1)
        ok = np.all(np.concatenate([np.isfinite(r) for r in flat.values()], axis=1), axis=1)
        S = int(ok.sum())
        if S < 2:
            from runner.errors import RunFailed

            raise RunFailed(f"check=sbc: {len(ok) - S} of {len(ok)} simulations' fits failed: nothing to rank")
        points, lower, upper = band(S, each)
        jitter = np.random.default_rng(0)  # randomised ranks: u exactly uniform for any L when calibrated
        sites = {n: site((r[ok] + jitter.uniform(size=r[ok].shape)) / (draws + 1), points, lower, upper,
                         int((~ok).sum())) for n, r in flat.items()}
        return cls(sites=sites, draws=draws, prob=prob, eval_points=points, lower=lower, upper=upper)

    def metrics(self) -> dict:
        out = {}
        for n, s in self.sites.items():
            out.update({f"sbc/{n}/outside_band": float(s.outside.max()), f"sbc/{n}/rank_mean": float(s.mean.mean()),
                        f"sbc/{n}/rank_var": float(s.var.mean()), f"sbc/{n}/z_mean": float(s.z_mean[np.argmax(abs(s.z_mean))]),
                        f"sbc/{n}/z_var": float(s.z_var[np.argmax(abs(s.z_var))]),
                        f"sbc/{n}/failed": s.failed})
        return out

    def as_json(self) -> dict:
        def floats(x):
            return [round(float(v), 6) for v in np.ravel(x)]

        return {"verdict": self.verdict, "draws": self.draws, "prob": self.prob,
                "uniform_var": UNIFORM_VAR,
                "band": {"eval_points": floats(self.eval_points), "lower": floats(self.lower), "upper": floats(self.upper)},
                "sites": {n: {"verdict": s.verdict, "elements": s.verdicts, "outside_band": floats(s.outside),
                              "rank_mean": floats(s.mean), "rank_var": floats(s.var), "z_mean": floats(s.z_mean),
                              "z_var": floats(s.z_var), "simulations": int(s.u.shape[0]), "failed": s.failed}
                          for n, s in self.sites.items()}}


def band(S: int, prob: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(evaluation points, lower, upper): ArviZ's simultaneous `prob` band of the ECDF of S uniform
    draws (the optimised method of Säilynoja et al. 2022)."""
    from runner.inference_data import import_arviz

    import_arviz()  # waits for the run's background import of ArviZ (runner.background): never two at once
    from arviz.stats.ecdf_utils import ecdf_confidence_band

    points = np.linspace(0, 1, EVAL_POINTS + 2)[1:-1]
    lower, upper = ecdf_confidence_band(S, points, points, prob=prob, method="optimized")
    return points, np.asarray(lower), np.asarray(upper)


def ecdf(u: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(len(points), m) ECDF of each column of u at `points`."""
    s = np.sort(u, axis=0)
    return np.stack([np.searchsorted(s[:, j], points, side="right") / len(s) for j in range(s.shape[1])], axis=1)


def site(u: np.ndarray, points, lower, upper, failed: int) -> Site:
    """One site's verdicts from its normalised ranks (S, m)."""
    S = u.shape[0]
    f = ecdf(u, points)
    outside = ((f < lower[:, None] - 1e-12) | (f > upper[:, None] + 1e-12)).mean(axis=0)
    mean, var = u.mean(axis=0), u.var(axis=0)
    z_mean = (mean - 0.5) / np.sqrt(UNIFORM_VAR / S)
    z_var = (var - UNIFORM_VAR) / np.sqrt(VAR_OF_VAR / S)
    verdicts = []
    for j in range(u.shape[1]):
        if outside[j] == 0:
            verdicts.append("calibrated")
        elif abs(z_mean[j]) > abs(z_var[j]):
            verdicts.append("biased")
        else:
            verdicts.append("underdispersed" if z_var[j] > 0 else "overdispersed")
    return Site(u=u, verdicts=verdicts, outside=outside, mean=mean, var=var, z_mean=z_mean, z_var=z_var, failed=failed)
