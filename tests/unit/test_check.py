"""runner/check (check=sbc): the rank verdicts on ranks whose answer is known, the refusals of
models that cannot simulate their data (one line each, before any fit), and the one compiled
program over simulations giving the draws the method's own fit gives on each data set alone."""
import numpy as np
import pytest

import runner
from runner.check import ranks
from runner.errors import ConfigError

S, L = 200, 100


def verdict_of(u):
    """The verdict of normalised ranks u in (0, 1) of one scalar site, as ranks among L draws."""
    r = np.clip(np.floor(np.asarray(u) * (L + 1)), 0, L)
    return ranks.Report.of({"x": r}, L, 0.95).sites["x"]


def test_uniform_ranks_are_calibrated():
    site = verdict_of(np.random.default_rng(0).uniform(size=S))
    assert site.verdict == "calibrated"
    assert site.outside[0] == 0 and abs(site.mean[0] - 0.5) < 0.05 and abs(site.var[0] - 1 / 12) < 0.01


def test_a_too_narrow_posterior_is_underdispersed():
    # the truth ~ N(0, 1), the posterior N(0, 0.5^2): truths in its tails, ranks at the extremes (U shape)
    from scipy.stats import norm

    u = norm.cdf(np.random.default_rng(1).normal(size=S), scale=0.5)
    site = verdict_of(u)
    assert site.verdict == "underdispersed" and site.var[0] > 1 / 12 and site.z_var[0] > 3


def test_a_too_wide_posterior_is_overdispersed():
    from scipy.stats import norm

    u = norm.cdf(np.random.default_rng(2).normal(size=S), scale=2.0)  # ranks in the middle (a hump)
    site = verdict_of(u)
    assert site.verdict == "overdispersed" and site.var[0] < 1 / 12 and site.z_var[0] < -3


def test_a_shifted_posterior_is_biased():
    from scipy.stats import norm

    u = norm.cdf(np.random.default_rng(3).normal(size=S), loc=-0.8)  # the posterior below the truth
    site = verdict_of(u)
    assert site.verdict == "biased" and site.mean[0] > 0.6


def test_a_point_estimate_ranks_at_the_extremes():
    truth = np.random.default_rng(4).normal(size=(S,))
    draws = np.repeat((truth + 0.1 * np.random.default_rng(5).normal(size=S))[:, None], L, axis=1)
    r = ranks.rank(truth, draws)
    assert set(np.unique(r)) <= {0.0, float(L)}
    assert ranks.Report.of({"x": r}, L, 0.95).sites["x"].verdict == "underdispersed"


def test_a_failed_fit_is_not_ranked_and_is_counted():
    truth = np.random.default_rng(6).uniform(size=(S, 2))
    draws = np.random.default_rng(7).uniform(size=(S, L, 2))
    draws[3] = np.nan
    r = ranks.rank(truth, draws)
    site = ranks.Report.of({"x": r}, L, 0.95).sites["x"]
    assert site.failed == 1 and site.u.shape == (S - 1, 2) and site.verdict == "calibrated"


MODELS = '''
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints


def normal(x):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("N", x.shape[0]):
        numpyro.sample("obs", dist.Normal(mu, 1.0), obs=x)


def factor(x):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    numpyro.factor("lik", dist.Normal(mu, 1.0).log_prob(x).sum())


def improper(x):
    mu = numpyro.sample("mu", dist.ImproperUniform(constraints.real, (), ()))
    with numpyro.plate("N", x.shape[0]):
        numpyro.sample("obs", dist.Normal(mu, 1.0), obs=x)


def computed(x):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("N", x.shape[0]):
        numpyro.sample("obs", dist.Normal(mu, 1.0), obs=2 * x)
'''


@pytest.fixture
def models(tmp_path, monkeypatch):
    (tmp_path / "sbc_models.py").write_text(MODELS)
    (tmp_path / "d.json").write_text('{"x": [0.5, 1.0, 1.5, 0.2]}')
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def compose(models, fn, *more):
    return runner.compose(["model=fn", f"model.fn=sbc_models.{fn}", "data=json", f"data.path={models}/d.json",
                           "check=sbc", "tracking=none", *more])[0]


@pytest.mark.parametrize("fn, message", [
    ("factor", "check=sbc cannot simulate model 'factor': site 'lik' is a factor (numpyro.factor), a log-density "
               "term that draws nothing"),
    ("improper", "check=sbc cannot simulate model 'improper': site 'mu' has an improper prior (ImproperUniform), "
                 "which cannot be sampled"),
    ("computed", "check=sbc cannot simulate model 'computed': observed site 'obs' does not observe one of the data's "
                 "arrays (its obs= is computed from them), so simulated values cannot take its place: pass the data "
                 "array itself as obs="),
])
def test_a_model_that_cannot_simulate_is_refused_in_one_line(models, fn, message):
    with pytest.raises(ConfigError) as e:
        runner.build(compose(models, fn))
    assert str(e.value) == message


def test_a_model_without_data_and_replicates_are_refused():
    with pytest.raises(ConfigError, match="^check=sbc simulates data sets, but model 'gaussian2d' takes no data"):
        runner.build(runner.compose(["model=gaussian2d", "check=sbc"])[0])
    with pytest.raises(ConfigError, match="^check=sbc fits its simulations side by side as replicates do"):
        runner.build(runner.compose(["model=coin", "check=sbc", "replicates=2"])[0])


@pytest.mark.parametrize("override, message", [
    ("check.simulations=1", "check.simulations must be an integer >= 2, got 1"),
    ("check.draws=0", "check.draws must be a positive integer, got 0"),
    ("check.prob=1.5", "check.prob must be in (0, 1), got 1.5"),
    ("check.chunk=0", "check.chunk must be a positive integer (or null: as the memory budget allows), got 0"),
])
def test_the_checks_settings_are_typed(override, message):
    with pytest.raises(ConfigError) as e:
        runner.build(runner.compose(["model=coin", "check=sbc", override])[0])
    assert str(e.value) == message


def test_one_program_over_the_simulations_gives_each_fit_alone(models):
    """SVI on 4 simulated data sets as one vmapped program, and each fitted alone by SVI's own fit
    (seed+i on data set i): the same guide draws, so the same ranks (float32: a vmapped program may
    round differently, so the ranks may differ by a draw or two, the draws by 1e-4)."""
    from runner.check.sbc import batched, one_at_a_time
    from runner.inference import FitContext

    exp = runner.build(compose(models, "normal", "guide=autonormal", "steps=200", "check.simulations=4",
                               "diagnostics.psis_draws=0"))
    import dataclasses

    from runner.experiment import configure_jax

    configure_jax(exp.cache_dir, exp.x64)  # XLA's persistent cache, as a run has it: each fit alone compiles once
    check = exp.inference
    inner = dataclasses.replace(exp, inference=check.method)
    truths, sims = check.simulator.draw(exp.seed, 4)
    assert sims.data["x"].shape == (4, 4) and truths["mu"].shape == (4,)
    together, mode = batched(check.method.simulation_fit(inner), exp.seed, sims, 50, None, FitContext())
    alone = one_at_a_time(inner, check.method, sims, 50, FitContext())
    assert mode == "one program" and together["mu"].shape == alone["mu"].shape == (4, 50)
    np.testing.assert_allclose(together["mu"], alone["mu"], atol=1e-4)
    chunked, mode = batched(check.method.simulation_fit(inner), exp.seed, sims, 50, 3, FitContext())
    assert mode == "2 programs of 3"
    np.testing.assert_allclose(chunked["mu"], together["mu"], atol=1e-5)


def test_nuts_simulations_split_into_chunks_when_the_memory_budget_says_so(models, monkeypatch):
    """NUTS's simulations as one program of vectorised chains; a budget that takes 2 simulations
    at most (XLA's plan refused above that: runner.inference.budget, its own tests) halves the
    program until it fits: 5 simulations in 3 programs of 2, the last padded."""
    from runner.inference import FitContext, budget
    from runner.check.sbc import batched

    exp = runner.build(compose(models, "normal", "inference=nuts", "inference.chains=2", "inference.warmup=30",
                               "inference.samples=30", "check.simulations=5"))
    import dataclasses

    check = exp.inference
    inner = dataclasses.replace(exp, inference=check.method)
    _, sims = check.simulator.draw(exp.seed, 5)
    real = budget.compile_within_budget
    sizes = []

    def two_at_most(jitted, roots, data, **kwargs):
        sizes.append(roots.shape[0])
        if roots.shape[0] > 2:
            raise budget.OverBudget(f"{kwargs.get('what')} needs more than this test's budget")
        return real(jitted, roots, data, **kwargs)

    monkeypatch.setattr(budget, "compile_within_budget", two_at_most)
    draws, mode = batched(check.method.simulation_fit(inner), exp.seed, sims, 20, None, FitContext())
    assert sizes == [5, 3, 2] and mode == "3 programs of 2"
    assert draws["mu"].shape == (5, 20) and np.isfinite(draws["mu"]).all()
    # each simulation's posterior is near its own data: N(sum(x) / (n + 1), 1 / (n + 1)) with n = 4
    post = sims.data["x"].sum(axis=1) / 5
    assert np.all(np.abs(draws["mu"].mean(axis=1) - post) < 4 * np.sqrt(1 / 5 / 20) + 0.3)
    with pytest.raises(budget.OverBudget):  # a chunk the user set is not split further
        batched(check.method.simulation_fit(inner), exp.seed, sims, 20, 4, FitContext())
