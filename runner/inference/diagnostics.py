"""Did the fit work? Plain numbers from a FitResult (no I/O, no MLflow):

- PSIS k-hat (Yao et al. 2018, "Yes, but did it work?"): the shape of the generalized Pareto
  tail fitted to the importance weights p(x, z) / q(z) at draws of the guide. The weights are
  computed inside the compiled fit (svi/program.py `log_weights`); the tail fit is NumPyro's own.
- Restart agreement (select=final, restarts > 1): the spread of the best restarts' final losses
  in units of the loss's Monte-Carlo noise, and the split-R-hat of their guide draws (chains =
  restarts): one answer, or several modes.
- Early stopping (stop.rtol): the step each restart stopped at.
- NUTS's chains (`nuts_verdict`): divergences, the largest split R-hat and the smallest effective
  sample size over every site, against the thresholds of Vehtari et al. (2021, "Rank-normalization,
  folding, and localization: an improved R-hat", Sec. 4), which Stan's diagnostics use: R-hat below
  1.01 and a bulk ESS of at least 100 per chain for results to report; any divergent transition
  after warmup means the sampler missed part of the posterior (Betancourt 2017; Stan warns on
  one). R-hat and ESS are NumPyro's (split, not rank-normalised: ArviZ's `rhat`/`ess` on
  inference_data.nc give the rank-normalised ones).
"""
from __future__ import annotations

import numpy as np

GOOD, USABLE = 0.5, 0.7  # the k-hat thresholds of Yao et al. (2018) / Vehtari et al. (2024)
AGREE_NOISE = 2.0  # restarts agree when the K-th best final loss is within this many noise units of the best
AGREE_RHAT = 1.1  # ...and the split-R-hat of their draws is below this (stochastic guides)
RHAT_GOOD, RHAT_USABLE = 1.01, 1.05  # Vehtari et al. (2021): < 1.01; 1.05 was Stan's earlier warning line
ESS_PER_CHAIN = 100  # good: bulk ESS >= 100 per chain (Vehtari et al. 2021), 400 for NumPyro's 4 chains
ESS_USABLE = 25  # below it a posterior mean's Monte-Carlo error, sd / sqrt(ESS), exceeds 0.2 sd


def psis_khat(log_weights) -> float:
    """NumPyro's k-hat of raw log importance weights (`psis_diagnostic`'s tail fit); inf when
    too few draws reach the tail, NaN when a weight is not finite."""
    import warnings

    from numpyro.infer.importance import _psis_khat

    lw = np.asarray(log_weights, dtype=np.float64)
    if not np.isfinite(lw).all():
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(_psis_khat(lw))


def khat_verdict(k: float) -> str:
    if not np.isfinite(k):
        return "do not trust" if k == np.inf else "unknown"
    return "good" if k < GOOD else "usable" if k < USABLE else "do not trust"


def psis(result) -> tuple[dict, dict]:
    """(metrics, tags) of the selected restart's k-hat; empty when the guide is not a density
    over every latent site (a point mass, or a model with enumerated sites)."""
    if result.log_weights is None:
        return {}, {}
    k = psis_khat(result.log_weights)
    metrics = {"psis_draws": int(np.size(result.log_weights))}
    if np.isfinite(k):
        metrics["psis_khat"] = k
    return metrics, {"psis_verdict": khat_verdict(k)}


def noise_unit(result, row: int) -> float:
    """The loss's Monte-Carlo noise of trained row `row` (the sd of one step's loss, from the
    differences of consecutive losses, so a slow drift does not count), floored at 1e-4 of the
    loss: a deterministic objective's noise is the optimizer's last jitter, often ~0."""
    best = float(result.final_losses[row])
    return max(float(result.noise[row]), 1e-4 * (1.0 + abs(best)))


def agreement(result, latent_names) -> tuple[dict, dict]:
    """(metrics, tags) comparing the K best restarts (select=final, restarts > 1)."""
    from numpyro.diagnostics import split_gelman_rubin

    if result.top is None:
        return {}, {}
    top = [int(t) for t in result.top if np.isfinite(result.final_losses[t])]
    if len(top) < 2:
        return {}, {}
    finals = result.final_losses
    unit = noise_unit(result, top[0])
    spread = float((finals[top[-1]] - finals[top[0]]) / unit)
    finite = finals[np.isfinite(finals)]
    metrics = {"restart_loss_spread": spread, "restart_loss_noise": unit, "restarts_compared": len(top),
               "restarts_finite": int(finite.size),
               "restarts_at_best": int(np.sum(finite - finals[top[0]] <= AGREE_NOISE * unit))}
    rhat = np.nan
    if result.top_draws:
        keep = [i for i, t in enumerate(result.top) if int(t) in top]
        values = []
        for name in latent_names:
            if name in result.top_draws:
                draws = np.asarray(result.top_draws[name], dtype=np.float64)[keep]
                values.append(np.max(split_gelman_rubin(draws.reshape(*draws.shape[:2], -1))))
        if values:
            rhat = float(np.max(values))
            metrics["restart_rhat"] = rhat
    same = spread <= AGREE_NOISE and not (np.isfinite(rhat) and rhat >= AGREE_RHAT)
    return metrics, {"restart_agreement": "one answer" if same else "several modes"}


def stopping(result, steps: int) -> tuple[dict, dict, str]:
    """(metrics, tags, words for the summary line) of early stopping; empty when it is off."""
    if result.stopped is None:
        return {}, {}, ""
    stopped = np.asarray(result.stopped)
    at = int(stopped[result.best_row])
    done = int(np.sum(stopped < steps))
    metrics = {"stop_step": at, "stop_step_max": int(stopped.max()), "restarts_converged": done}
    if done == len(stopped):
        return metrics, {"converged": "yes"}, f"stopped={at}/{steps}"
    return metrics, {"converged": "no"}, f"not_converged={len(stopped) - done}/{len(stopped)} (hit steps={steps})"


def nuts_verdict(max_rhat: float, min_ess: float, divergences: int, nuts) -> tuple[str, str]:
    """(verdict, why and what to try; "" when good) of NUTS's chains: "do not trust" on any
    divergence, R-hat above 1.05 or ESS below 25; "usable" on R-hat above 1.01 or ESS below 100
    per chain; else "good". `nuts` has the run's warmup, samples, chains and target_accept."""
    import math

    if np.isnan(max_rhat) or np.isnan(min_ess):  # inf R-hat: a chain that never moved, below
        return "unknown", "R-hat or n_eff undefined (too few draws); try more inference.samples"
    need = ESS_PER_CHAIN * nuts.chains
    why, fixes = [], []
    if divergences > 0:
        why.append(f"{divergences} divergences")
        fixes.append(f"inference.target_accept={max(0.95, min(0.99, round(nuts.target_accept + 0.1, 2)))}")
    if max_rhat > RHAT_GOOD:
        why.append(f"max_r_hat={max_rhat:.4g} > {RHAT_USABLE if max_rhat > RHAT_USABLE else RHAT_GOOD}")
        fixes.append(f"inference.warmup={max(2 * nuts.warmup, 1000)}")
        if nuts.chains < 4:
            fixes.append("inference.chains=4")
    if min_ess < need:
        why.append(f"min_n_eff={min_ess:.4g} < {ESS_USABLE if min_ess < ESS_USABLE else need}")
        more = min(math.ceil(nuts.samples * need / max(min_ess, 1.0) / 100) * 100, 10 * nuts.samples)
        fixes.append(f"inference.samples={more}")
    if not why:
        return "good", ""
    bad = divergences > 0 or max_rhat > RHAT_USABLE or min_ess < ESS_USABLE
    if divergences > 0 or max_rhat > RHAT_USABLE:
        fixes.append("reparametrize (numpyro.infer.reparam)")
    return ("do not trust" if bad else "usable"), f"{', '.join(why)}; try {', '.join(fixes)}"
