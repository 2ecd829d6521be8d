"""runner/inference/nuts.py in-process: the GMM tutorial's collapsed NUTS (the assignments summed out),
vectorised chains, convergence diagnostics and the posterior summary as metrics, the MAP
assignments. (A user model by NUTS through the CLI: tests/e2e/test_user_project.py.)"""
import json

import numpy as np
import pytest
from conftest import run_recorded, same_partition


def split_rhat(x):
    """Split R-hat (Gelman et al., BDA3 11.4) of draws (chains, n), written out here."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[1] // 2
    halves = np.concatenate([x[:, :n], x[:, n:2 * n]])
    w, b = halves.var(1, ddof=1).mean(), n * halves.mean(1).var(ddof=1)
    return float(np.sqrt(((n - 1) / n * w + b / n) / w))


def ess(x):
    """Effective sample size of draws (chains, n) as Stan defines it (BDA3 11.5: the chains' pooled
    autocorrelations, summed in pairs up to Geyer's initial monotone sequence), written out here."""
    x = np.asarray(x, dtype=np.float64)
    m, n = x.shape
    acov = np.array([np.correlate(c - c.mean(), c - c.mean(), "full")[n - 1:] / n for c in x])
    w = acov[:, 0].mean() * n / (n - 1)
    var_plus = w * (n - 1) / n + (x.mean(1).var(ddof=1) if m > 1 else 0.0)
    rho = 1 - (w - acov.mean(0)) / var_plus
    rho[0] = 1.0
    pairs = rho[:-1:2] + rho[1::2]
    pairs = pairs[:np.argmax(pairs <= 0)] if (pairs <= 0).any() else pairs
    return float(m * n / (-1 + 2 * np.minimum.accumulate(pairs).sum()))


def gmm_posterior(x=(0.0, 1.0, 10.0, 11.0, 12.0), prior_sd=10.0, concentration=0.5, log_scale_sd=2.0):
    """The tutorial GMM's exact posterior (K=2): the sum over the 2^5 assignments, each with its
    Dirichlet-multinomial weight and, given the scale, conjugate Normal locs; the scale integrated
    on a grid of log(scale). Returns the mean and sd of the sorted locs and of log(scale).
    (Cross-checked by importance sampling, 4e7 draws, ESS 1.3e5: sorted locs 0.4273, 10.6213.)"""
    import itertools

    from scipy import stats
    from scipy.special import betaln, logsumexp

    x = np.asarray(x)
    u = np.linspace(-8.0, 5.0, 6001)  # log(scale); the prior is N(0, 2): far past its mass both ways
    s2 = np.exp(2 * u)
    logw, comps = [], []
    for z in itertools.product((0, 1), repeat=len(x)):
        z = np.array(z)
        n0, n1 = int((z == 0).sum()), int((z == 1).sum())
        lw = betaln(concentration + n0, concentration + n1) - betaln(concentration, concentration)
        lw = lw + stats.norm.logpdf(u, 0.0, log_scale_sd)
        post = []
        for k in (0, 1):
            xk, a = x[z == k], prior_sd**2
            nk = len(xk)
            if nk:  # the marginal N(xk; 0, s2 I + a 11^T): its determinant and quadratic form in closed form
                quad = (xk**2).sum() / s2 - a * xk.sum() ** 2 / (s2 * (s2 + nk * a))
                lw = lw - 0.5 * (nk * np.log(2 * np.pi) + nk * np.log(s2) + np.log1p(nk * a / s2) + quad)
            prec = 1 / a + nk / s2
            post.append((xk.sum() / s2 / prec, 1 / prec))
        logw.append(lw)
        comps.append(post)
    w = np.exp(np.array(logw) - logsumexp(logw))
    # E max(X, Y), E max(X, Y)^2 of two independent normals (Clark 1961); min = sum - max
    e_sum = e_max = e_max2 = e_sq = 0.0
    for wi, ((m1, v1), (m2, v2)) in zip(w, comps):
        th = np.sqrt(v1 + v2)
        al = (m1 - m2) / th
        up, down, dens = stats.norm.cdf(al), stats.norm.cdf(-al), stats.norm.pdf(al)
        e_sum += np.sum(wi * (m1 + m2))
        e_max += np.sum(wi * (m1 * up + m2 * down + th * dens))
        e_max2 += np.sum(wi * ((v1 + m1**2) * up + (v2 + m2**2) * down + (m1 + m2) * th * dens))
        e_sq += np.sum(wi * (v1 + m1**2 + v2 + m2**2))
    e_min, e_min2 = e_sum - e_max, e_sq - e_max2
    wu = w.sum(0)
    e_u = float(np.sum(wu * u))
    return {"locs_mean": np.array([e_min, e_max]), "locs_sd": np.sqrt([e_min2 - e_min**2, e_max2 - e_max**2]),
            "log_scale_mean": e_u, "log_scale_sd": float(np.sqrt(np.sum(wu * u**2) - e_u**2))}


def test_collapsed_nuts_on_the_tutorial_gmm(tmp_path):
    """The tutorial's collapsed NUTS, 2 chains: the draws' sorted locs and log(scale) agree with the
    exact posterior within 4 Monte-Carlo standard errors (the posterior sd over the root of the
    draws' own effective sample size); every R-hat and n_eff logged is the one of the saved draws,
    computed here from their definitions; 250 draws after 50 warmup steps do not converge (the chains
    sit in different labellings), and the run says so."""
    record, out = run_recorded(tmp_path / "run", "model=gmm", "inference=nuts", "inference.chains=2")
    run_dir = out.run_dir
    with np.load(run_dir / "posterior.npz", allow_pickle=False) as z:
        draws = {k: z[k] for k in ("locs", "scale", "weights")}
    assert draws["locs"].shape == (2 * 250, 2)  # 2 vectorised chains x 250 samples (tutorial's 50 warmup)
    chains = {k: v.reshape(2, 250, -1) for k, v in draws.items()}  # (chain, draw, component)
    m = record["scalars"]
    for site, c in chains.items():
        assert m[f"r_hat/{site}"] == pytest.approx(max(split_rhat(c[..., i]) for i in range(c.shape[-1])), rel=1e-5)
        assert m[f"n_eff/{site}"] == pytest.approx(min(ess(c[..., i]) for i in range(c.shape[-1])), rel=1e-4)
    assert m["max_r_hat"] == max(m[f"r_hat/{s}"] for s in chains) and m["min_n_eff"] == min(m[f"n_eff/{s}"] for s in chains)
    assert m["max_r_hat"] > 1.05 and record["tags"]["nuts_verdict"] == "do not trust"  # label switching
    exact = gmm_posterior()
    ordered = np.sort(chains["locs"], axis=-1)  # the labels are arbitrary; the sorted locs are not
    for i in range(2):
        se = exact["locs_sd"][i] / np.sqrt(ess(ordered[..., i]))
        assert abs(ordered[..., i].mean() - exact["locs_mean"][i]) < 4 * se, (i, ordered[..., i].mean(), exact, se)
    log_scale = np.log(chains["scale"][..., 0])
    se = exact["log_scale_sd"] / np.sqrt(ess(log_scale))
    assert abs(log_scale.mean() - exact["log_scale_mean"]) < 4 * se, (float(log_scale.mean()), exact, se)
    assert m["posterior/scale/mean"] == pytest.approx(float(draws["scale"].mean()), rel=1e-4)
    assert m["posterior/scale/std"] == pytest.approx(float(draws["scale"].std()), rel=5e-3)
    assert "plots/trace.png" in record["artifacts"] and (run_dir / "plots" / "trace.png").is_file()
    assign = json.loads((run_dir / "assignments.json").read_text())["assignment"]
    assert same_partition(assign, [0, 0, 1, 1, 1])


def test_long_chains_agree_with_the_exact_gmm_posterior(tmp_path):
    """4 chains x 2000 draws (target_accept 0.95: no divergences here): the sorted locs and
    log(scale) within 4 Monte-Carlo standard errors of the exact posterior; with these draws' effective
    sizes (~300 for log(scale), ~800 for the locs) that is 0.17 in log(scale) and 0.33 / 0.26 in the locs,
    so a likelihood or prior off by a factor shows (twice the scale moves log(scale) by 0.69)."""
    record, out = run_recorded(tmp_path / "run", "model=gmm", "inference=nuts", "inference.chains=4",
                               "inference.warmup=1000", "inference.samples=2000", "inference.target_accept=0.95")
    with np.load(out.run_dir / "posterior.npz", allow_pickle=False) as z:
        locs, scale = np.sort(z["locs"].reshape(4, 2000, 2), axis=-1), z["scale"].reshape(4, 2000)
    exact = gmm_posterior()
    assert record["scalars"]["divergences"] == 0
    for i in range(2):
        n_eff = ess(locs[..., i])
        assert n_eff > 400 and split_rhat(locs[..., i]) < 1.01  # the sorted locs mix: the check below is tight
        se = exact["locs_sd"][i] / np.sqrt(n_eff)
        assert abs(locs[..., i].mean() - exact["locs_mean"][i]) < 4 * se, (i, float(locs[..., i].mean()), exact, se)
    log_scale = np.log(scale)
    n_eff = ess(log_scale)
    assert n_eff > 200 and split_rhat(log_scale) < 1.02
    se = exact["log_scale_sd"] / np.sqrt(n_eff)
    assert abs(log_scale.mean() - exact["log_scale_mean"]) < 4 * se, (float(log_scale.mean()), exact, se)


def test_the_tutorial_keeps_its_nuts_settings_and_other_models_get_numpyros():
    """model=gmm's hints are seed 000's collapsed NUTS (50 warmup, 250 draws, 1 chain); a model
    without NUTS hints (coin, a user's function, gmm without hints) gets NumPyro's and Stan's 4 x
    (1000 warmup, 1000 draws); an override wins over both."""
    import runner

    def settings(*overrides):
        nuts = runner.build(runner.compose(["inference=nuts", *overrides])[0]).inference
        return nuts.warmup, nuts.samples, nuts.chains

    assert settings("model=gmm") == (50, 250, 1)
    assert settings("model=coin") == settings("model=gmm", "~hints") == (1000, 1000, 4)
    assert settings("model=gmm", "inference.samples=400") == (50, 400, 1)
    assert settings("model=coin", "+hints.chains=2") == (1000, 1000, 2)


def test_defaults_on_a_conjugate_model_are_good_and_match_the_analytic_posterior(tmp_path):
    """Seed 004's coin (12 heads, 8 tails, uniform prior): the posterior is Beta(13, 9). With the
    default 4 x 1000 draws the chains agree (R-hat <= 1.01, n_eff >= 400, no divergences):
    verdict good, said in the result line, and the mean is within 3 Monte-Carlo errors of 13/22."""
    record, out = run_recorded(tmp_path / "run", "model=coin", "inference=nuts")
    m, tags = record["scalars"], record["tags"]
    assert out.output.draws["latent_fairness"].shape == (4, 1000)
    assert tags["nuts_verdict"] == "good" and "nuts_advice" not in tags
    assert m["max_r_hat"] <= 1.01 and m["min_n_eff"] >= 400 and m["divergences"] == 0
    assert out.output.line.endswith("divergences=0 (good)") and "samples=1000x4" in out.output.line
    sd = np.sqrt(13 * 9 / (22**2 * 23))  # Beta(13, 9)
    assert abs(m["posterior/latent_fairness/mean"] - 13 / 22) < 3 * sd / np.sqrt(m["min_n_eff"])
    assert m["posterior/latent_fairness/std"] == pytest.approx(sd, rel=0.1)


BAD_REGRESSION = '''
import numpyro
import numpyro.distributions as dist


def regression(x, y=None):
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 100.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 100.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(10.0))
    with numpyro.plate("N", x.shape[0]):
        numpyro.sample("y", dist.Normal(alpha + beta * x, sigma), obs=y)
'''


def test_badly_mixed_chains_say_do_not_trust_with_the_fix(tmp_path, monkeypatch):
    """A regression on x = 1000..1019 (intercept and slope correlated to 1 - 1e-6) with 5 warmup
    steps and 20 draws: the chains never reach the posterior. The run still finishes, but its tag
    and its result line say "do not trust", why (R-hat, n_eff, divergences) and what to try."""
    import json
    import sys

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "badreg.py").write_text(BAD_REGRESSION)
    x = 1000 + np.arange(20.0)
    y = 3 + 0.5 * (x - 1000) + np.random.default_rng(0).normal(size=20)
    (tmp_path / "d.json").write_text(json.dumps({"x": x.tolist(), "y": y.tolist()}))
    try:
        record, out = run_recorded(tmp_path / "run", "model=fn", "model.fn=badreg.regression", "data=json",
                                   "data.path=d.json", "inference=nuts", "inference.warmup=5", "inference.samples=20")
    finally:
        sys.modules.pop("badreg", None)
    m, tags, line = record["scalars"], record["tags"], out.output.line
    assert m["max_r_hat"] > 1.05 and m["min_n_eff"] < 25
    assert tags["nuts_verdict"] == "do not trust"
    assert "(do not trust: " in line and tags["nuts_advice"] in line
    assert f"max_r_hat={m['max_r_hat']:.4g} > 1.05" in line and f"min_n_eff={m['min_n_eff']:.4g} < 25" in line
    assert "inference.warmup=1000" in line and "reparametrize (numpyro.infer.reparam)" in line
    if m["divergences"]:
        assert f"{m['divergences']:.0f} divergences" in line and "inference.target_accept=0.95" in line


class Settings:
    warmup, samples, chains, target_accept = 1000, 1000, 4, 0.8


@pytest.mark.parametrize("rhat, ess, div, verdict, words", [
    (1.004, 2000.0, 0, "good", ""),
    (1.01, 400.0, 0, "good", ""),  # the thresholds themselves pass (Vehtari et al. 2021: R-hat < 1.01 ~ <= 1.01)
    (1.02, 2000.0, 0, "usable", "max_r_hat=1.02 > 1.01; try inference.warmup=2000"),
    (1.003, 250.0, 0, "usable", "min_n_eff=250 < 400; try inference.samples=1600"),
    (1.003, 2000.0, 1, "do not trust", "1 divergences; try inference.target_accept=0.95, reparametrize"),
    (1.3, 2000.0, 0, "do not trust", "max_r_hat=1.3 > 1.05; try inference.warmup=2000, reparametrize"),
    (np.inf, 3.0, 0, "do not trust", "max_r_hat=inf > 1.05, min_n_eff=3 < 25; try inference.warmup=2000, "
                                     "inference.samples=10000, reparametrize"),
    (np.nan, np.nan, 0, "unknown", "R-hat or n_eff undefined"),
])
def test_nuts_verdict_thresholds(rhat, ess, div, verdict, words):
    from runner.inference.diagnostics import nuts_verdict

    got, why = nuts_verdict(rhat, ess, div, Settings())
    assert got == verdict and why.startswith(words) and (why == "") == (verdict == "good")


@pytest.fixture
def jax_width():
    """The process's JAX float width, as it was before the test (a float64 run sets it)."""
    import jax

    before = jax.config.jax_enable_x64
    yield
    jax.config.update("jax_enable_x64", before)


@pytest.mark.slow  # a NUTS fit compiled in float64 (8 s)
def test_jax_x64_makes_the_data_and_the_draws_float64(tmp_path, jax_width, monkeypatch):
    """jax.x64=true (a key, or a model config's `jax: {x64: true}`, or JAX_ENABLE_X64=1) runs in
    float64: the data are loaded as float64 (not rounded to float32 first) and posterior.npz
    holds float64 draws; without it, the next run in the same process is float32 again."""
    import runner

    short = ["model=coin", "inference=nuts", "inference.warmup=20", "inference.samples=100", "inference.chains=1"]
    _, wide = run_recorded(tmp_path / "wide", *short, "jax.x64=true")
    _, narrow = run_recorded(tmp_path / "narrow", *short)
    for out, dtype in ((wide, np.float64), (narrow, np.float32)):
        assert out.experiment.data.dtype == dtype
        with np.load(out.run_dir / "posterior.npz", allow_pickle=False) as z:
            assert z["latent_fairness"].dtype == dtype and z["latent_fairness"].shape == (100,)
    conf = tmp_path / "conf" / "model"
    conf.mkdir(parents=True)
    (conf / "coin64.yaml").write_text("# @package _global_\ndefaults:\n  - coin\njax: {x64: true}\n")
    cfg, _ = runner.compose(["model=coin64"], config_dir=str(tmp_path / "conf"))
    assert cfg.jax.x64 is True and cfg.jax.cache_dir and runner.build(cfg).x64
    monkeypatch.setenv("JAX_ENABLE_X64", "1")
    exp = runner.build(runner.compose(["model=gmm"])[0])
    assert exp.x64 and exp.data.dtype == np.float64
    monkeypatch.delenv("JAX_ENABLE_X64")
    exp = runner.build(runner.compose(["model=gmm"])[0])
    assert not exp.x64 and exp.data.dtype == np.float32
    from runner.errors import ConfigError

    with pytest.raises(ConfigError, match="jax.x64 must be true or false, got 'yes'"):
        runner.build(runner.compose(["jax.x64=yes"])[0])
