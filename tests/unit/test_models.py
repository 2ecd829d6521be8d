"""runner/models: each model's seed numbers, reproduced by its default settings (seeds 000 and
004: the README's table), and a user's plain NumPyro function as a model (runner/models/function.py):
what it is refused for before any fit, its discrete sites enumerated without marking."""
import json
import math
import sys

import numpy as np
import pytest
from conftest import GMM_LOCS, GMM_LOSS, GMM_SCALE, GMM_WEIGHTS, ROOT, run_recorded, sorted_by_loc

from runner.api import compose, fit_config
from runner.errors import ConfigError
from runner.experiment import build
from runner.models.gaussian2d import principal_axes

EXAMPLE = ROOT / "examples" / "my_project"


# --- the seeds' own numbers ------------------------------------------------------------------------

def test_gmm_tutorial_settings_are_the_defaults():
    exp = build(compose(["model=gmm", "guide=autodelta"])[0])
    assert (exp.inference.steps, exp.restarts, exp.inference.select) == (200, 100, "initial")
    assert type(exp.inference.loss).__name__ == "TraceEnum_ELBO"
    assert exp.inference.deterministic  # AutoDelta + enumeration: exact objective


def test_gmm_tutorial_numbers():
    _, r = fit_config(["model=gmm", "guide=autodelta"])
    weights, locs = sorted_by_loc(r.params)
    np.testing.assert_allclose(weights, GMM_WEIGHTS, atol=2e-3)
    np.testing.assert_allclose(locs, GMM_LOCS, atol=5e-3)
    assert r.params["scale_auto_loc"] == pytest.approx(GMM_SCALE, abs=2e-3)
    assert r.initial_loss == pytest.approx(25.1498, abs=0.02)  # the tutorial's best initial loss
    assert r.final_loss == pytest.approx(r.losses[0, -1])  # deterministic: the last step
    assert np.mean(r.losses[0, -10:]) == pytest.approx(GMM_LOSS, abs=2e-3)
    # select=initial trains exactly the restart with the lowest initial loss
    assert r.best == int(np.argmin(r.initial_losses)) and list(r.trained) == [r.best]


def test_gmm_lbfgs_reaches_the_tutorial_optimum():
    exp, r = fit_config(["model=gmm", "guide=autodelta", "optim=lbfgs", "steps=50"])
    assert exp.inference.deterministic
    weights, locs = sorted_by_loc(r.params)
    np.testing.assert_allclose(locs, GMM_LOCS, atol=5e-3)
    assert r.final_loss == pytest.approx(GMM_LOSS, abs=2e-3)


def test_gmm_full_guide_learns_assignment_probs():
    # seed 000's full guide: globals as the MAP fit, assignments [0 0 1 1 1] up to label order
    _, auto = fit_config(["model=gmm", "guide=autodelta"])
    _, r = fit_config(["model=gmm", "guide=manual"])
    np.testing.assert_allclose(r.initial_losses, auto.initial_losses, rtol=1e-5)  # E-step init
    probs = r.params["assignment_probs"]
    assert probs.shape == (5, 2)
    labels = probs.argmax(-1)
    assert labels[0] == labels[1] != labels[2] == labels[3] == labels[4]
    assert probs.max(-1).min() > 0.99
    _, locs = sorted_by_loc(r.params)
    np.testing.assert_allclose(locs, GMM_LOCS, atol=0.05)
    assert r.final_loss == pytest.approx(GMM_LOSS, abs=0.1)


def test_coin_beta_guide_matches_analytic_posterior():
    # seed 004: alpha 12.18.. (prints 12.3 / 8.6 at 10000 steps); analytic Beta(13, 9)
    exp, r = fit_config(["model=coin", "guide=manual", "tracking.max_points_per_curve=null"])  # a curve point per step
    assert not exp.inference.deterministic  # the Beta guide samples: final loss = mean of the last 10%
    assert r.final_loss == pytest.approx(float(np.mean(r.losses[0, -1000:])), rel=1e-6)
    a, b = float(r.params["alpha_q"]), float(r.params["beta_q"])
    assert a / (a + b) == pytest.approx(13 / 22, abs=0.02)
    assert a == pytest.approx(12.3, abs=1.5) and b == pytest.approx(8.6, abs=1.0)
    sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    assert sd == pytest.approx(math.sqrt(13 * 9 / (22**2 * 23)), abs=0.01)
    assert r.final_loss == pytest.approx(14.79, abs=0.05)  # seed: avg. loss [9501-10000] 14.7887


def test_coin_normal_guide_mean():
    _, r = fit_config(["model=coin", "guide=manual", "guide.variant=normal", "steps=50000"])
    assert float(r.params["mean"]) == pytest.approx(0.59, abs=0.01)
    assert float(r.params["var"]) == pytest.approx(0.10, abs=0.015)  # the seed's "B 0.11 0.10"


@pytest.fixture(scope="module")
def multimodal_manual():
    return fit_config(["model=multimodal", "guide=manual"])


def test_multimodal_manual_guide(multimodal_manual):
    # seed 004: b 4.990, sig1_q 0.505, sig2_q 4.676, theta 44.7 deg, avg loss 4.4520
    _, r = multimodal_manual
    p = r.params
    assert float(p["b"]) == pytest.approx(5.0, abs=0.15)
    assert float(p["sig1_q"]) == pytest.approx(0.50, abs=0.05)
    assert float(p["sig2_q"]) == pytest.approx(4.6, abs=0.5)
    assert math.degrees(float(p["theta"])) == pytest.approx(45.0, abs=3.0)
    assert r.final_loss == pytest.approx(4.452, abs=0.1)


def test_multimodal_mixture_guide_matches_manual(multimodal_manual):
    _, manual = multimodal_manual
    _, r = fit_config(["model=multimodal", "guide=mixture", "restarts=8"])
    assert r.final_loss <= manual.final_loss + 0.3
    # two separated modes: guide samples split between (x+y)/sqrt2 near +b and near -b
    u1 = (r.samples["x"] + r.samples["y"]) / math.sqrt(2)
    pos, neg = u1[u1 > 0], u1[u1 < 0]
    assert 0.25 < len(pos) / len(u1) < 0.75
    assert np.median(pos) == pytest.approx(5.0, abs=0.5) and np.median(neg) == pytest.approx(-5.0, abs=0.5)


def test_gaussian2d_automvn_covariance():
    # seed 004: sigma1 = 1.01, sigma2 = 3.01, theta = 44.08 deg
    _, r = fit_config(["model=gaussian2d", "guide=automvn"])
    L = r.params["auto_scale_tril"]
    sigmas, angle = principal_axes(L @ L.T)
    np.testing.assert_allclose(sigmas, [1.0, 3.0], atol=0.1)
    assert abs(angle) == pytest.approx(45.0, abs=3.0)
    assert r.final_loss == pytest.approx(-2.9368, abs=0.05)


# --- a user's function as a model -----------------------------------------------------------------

@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    """The user's folder as the command sees it: the current directory, importable."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:  # the user's modules written here
        if name.split(".")[0] in ("broken", "silent", "mymodels", "mix"):
            del sys.modules[name]


def test_user_mistakes_are_one_line_before_any_fit(user_folder):
    """What a user gets wrong in their own module or data: one line that keeps the cause (the
    module, the original error and where it was raised), before any fit. (The command's exit
    code 2 and empty store: tests/e2e/test_cli_errors.py.)"""
    tmp_path = user_folder
    (tmp_path / "broken.py").write_text("import numpyro\n\nraise RuntimeError('half-written module')\n")
    (tmp_path / "silent.py").write_text("def model(x, y=None):\n    raise ValueError()\n")
    (tmp_path / "d.json").write_text('{"x": [1.0, 2.0, 3.0]}')
    (tmp_path / "two.csv").write_text("a,b\n1,2\n3,4\n")
    base = ["data=json", "data.path=d.json"]
    cases = {
        ("model=fn", "model.fn=broken.model", *base):
            "model.fn=broken.model: importing broken failed: RuntimeError: half-written module (at ",
        ("model=fn", "model.fn=silent.model", *base): "fails on this data: ValueError (at ",
        ("model=fn", "model.fn=nosuch.model", *base): "no module named 'nosuch'",
        ("model=fn", "model.fn=silent.nothing", *base): "module silent has no 'nothing'",
        ("model=fn", "model.fn=mymodels.eight_schools", *base): "needs data for its parameters ['J', 'sigma']",
        ("model=gmm", "data=csv", "data.path=two.csv"): "takes one unnamed array",
        ("model=fn",): "model.fn is required: set model.fn=... (model=fn needs",
        ("model=fn", "model.fn=silent.model", "data=json", "data.path=two.csv"): "a .csv file: use data=csv",
    }
    (tmp_path / "mymodels.py").write_text((EXAMPLE / "mymodels.py").read_text())
    for args, message in cases.items():
        cfg, _ = compose(list(args))
        with pytest.raises(ConfigError) as e:
            build(cfg)
        assert message in str(e.value) and len(str(e.value).splitlines()) == 1, (args, str(e.value))


def test_a_missing_data_path_is_named_with_its_group(user_folder):
    (user_folder / "silent.py").write_text("def model(x, y=None):\n    pass\n")
    with pytest.raises(ConfigError) as e:
        build(compose(["model=fn", "model.fn=silent.model", "data=csv"])[0])
    assert "data.path is required" in str(e.value) and len(str(e.value).splitlines()) == 1, str(e.value)


def test_a_misspelt_observation_key_is_a_note_not_a_refusal(user_folder, capsys):
    """The function's y gets no data: said in one note on stderr, and the run goes on."""
    (user_folder / "silent.py").write_text("def model(x, y=None):\n    pass\n")
    (user_folder / "dy.json").write_text('{"x": [1.0, 2.0, 3.0], "Y": [1.0, 2.0, 3.0]}')
    exp = build(compose(["model=fn", "model.fn=silent.model", "data=json", "data.path=dy.json"])[0])
    assert list(exp.data) == ["x"]
    err = capsys.readouterr().err
    assert "does not take data ['Y']" in err and "['y'] get none" in err


def test_discrete_sites_are_enumerated_without_marking(user_folder):
    """A user mixture whose assignment site is not marked for enumeration: runner marks it,
    requires TraceEnum, and with the tutorial's initialisation attached as an extra
    (runner.model_extras) and its settings, fits the seed-000 data to the tutorial's answer."""
    tmp_path = user_folder
    (tmp_path / "mix.py").write_text(
        "import jax\nimport jax.numpy as jnp\nimport numpyro\nimport numpyro.distributions as dist\n"
        "import runner\n\n"
        "def init(key, data):  # the tutorial's: equal weights, locs at random points, scale sqrt(var/2)\n"
        "    locs = data[jax.random.choice(key, data.shape[0], (2,))]\n"
        "    return {'weights': jnp.ones(2) / 2, 'locs': locs, 'scale': jnp.sqrt(data.var() / 2)}\n\n"
        "@runner.model_extras(init_values=init)\n"
        "def mixture(data):\n"
        "    w = numpyro.sample('weights', dist.Dirichlet(0.5 * jnp.ones(2)))\n"
        "    s = numpyro.sample('scale', dist.LogNormal(0.0, 2.0))\n"
        "    with numpyro.plate('components', 2):\n"
        "        locs = numpyro.sample('locs', dist.Normal(0.0, 10.0))\n"
        "    with numpyro.plate('data', data.shape[0]):\n"
        "        z = numpyro.sample('z', dist.Categorical(w))\n"
        "        numpyro.sample('obs', dist.Normal(locs[z], s), obs=data)\n")
    (tmp_path / "d.json").write_text(json.dumps({"data": [0.0, 1.0, 10.0, 11.0, 12.0]}))
    args = ["model=fn", "model.fn=mix.mixture", "data=json", "data.path=d.json", "guide=autodelta"]
    with pytest.raises(ConfigError, match="use loss=traceenum"):
        build(compose([*args, "loss=trace"])[0])
    run_recorded(tmp_path / "run", *args, "loss=traceenum", "steps=200", "optim=adam",
                 "+hints={lr: 0.1, b1: 0.8, b2: 0.99}", "restarts=100", "select=initial")
    assign = json.loads((tmp_path / "run" / "assignments.json").read_text())["z"]
    assert assign[0] == assign[1] != assign[2] == assign[3] == assign[4]
    locs = sorted(json.loads((tmp_path / "run" / "latents.json").read_text())["locs"])
    assert locs == pytest.approx([0.5, 11.0], abs=0.2)


# --- K=1: one Gaussian (the baseline of a sweep over K) ----------------------------------------------

def test_gmm_with_one_component_is_one_gaussian(tmp_path):
    """model.K=1 has no weights and no assignment site (under enumeration a size-1 dimension is a
    broadcast one): EM's average log-likelihood is the Gaussian maximum likelihood's,
    -log(2 pi e var(x)) / 2, and the MAP fit is the minimum of the negative log joint under the
    tutorial's priors (Normal(0, 10) on the loc, LogNormal(0, 2) on the scale), found by scipy."""
    from scipy.optimize import minimize
    from scipy.stats import lognorm, norm

    x = np.array([0.0, 1.0, 10.0, 11.0, 12.0])
    record, _ = run_recorded(tmp_path / "em", "model=gmm", "model.K=1", "inference=em")
    assert record["scalars"]["avg_loglik"] == pytest.approx(-0.5 * math.log(2 * math.pi * math.e * x.var()), abs=1e-5)

    def neg_log_joint(v):
        loc, log_s = v
        return -(norm.logpdf(x, loc, math.exp(log_s)).sum() + norm.logpdf(loc, 0, 10) + lognorm.logpdf(math.exp(log_s), 2))

    best = minimize(neg_log_joint, [5.0, 1.0], method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10})
    record, out = run_recorded(tmp_path / "map", "model=gmm", "model.K=1")
    assert out.final_loss == pytest.approx(best.fun, abs=1e-3)
    params = json.loads((out.run_dir / "params.json").read_text())
    assert params["locs_auto_loc"] == pytest.approx([best.x[0]], abs=1e-2)
    assert "weights_auto_loc" not in params and not (out.run_dir / "assignments.json").exists()
