"""runner/inference/nuts.py in-process: the GMM tutorial's collapsed NUTS (the assignments summed out),
vectorised chains, convergence diagnostics and the posterior summary as metrics, the MAP
assignments. (A user model by NUTS through the CLI: tests/e2e/test_user_project.py.)"""
import json

import numpy as np
import pytest
from conftest import run_recorded, same_partition


def test_collapsed_nuts_on_the_tutorial_gmm(tmp_path):
    record, out = run_recorded(tmp_path / "run", "model=gmm", "inference=nuts", "inference.chains=2")
    run_dir = out.run_dir
    with np.load(run_dir / "posterior.npz", allow_pickle=False) as z:
        locs = z["locs"]
    assert locs.shape == (2 * 250, 2)  # 2 vectorised chains x 250 samples (tutorial's 50 warmup)
    assert np.abs(np.sort(locs, axis=1).mean(0) - [0.5, 11.0]).max() < 1.0
    m = record["scalars"]
    assert {"r_hat/locs", "n_eff/locs", "r_hat/scale", "n_eff/weights", "posterior/scale/mean",
            "posterior/scale/std", "posterior/locs.1/mean"} <= set(m)
    assert 0.9 < m["r_hat/scale"] < 2 and m["n_eff/scale"] > 1
    assert m["posterior/scale/mean"] == pytest.approx(float(np.load(run_dir / "posterior.npz")["scale"].mean()), rel=1e-4)
    assert m["posterior/scale/std"] == pytest.approx(float(np.load(run_dir / "posterior.npz")["scale"].std()), rel=5e-3)
    assert "plots/trace.png" in record["artifacts"] and (run_dir / "plots" / "trace.png").is_file()
    assign = json.loads((run_dir / "assignments.json").read_text())["assignment"]
    assert same_partition(assign, [0, 0, 1, 1, 1])


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
