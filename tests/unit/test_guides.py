"""runner/guides: each builder builds its guide for a model (`builder(model, init_values)`), over
the model's continuous latent sites with the enumerated ones left to the ELBO; the config names
the builder and its settings; the hand-written guides' parameters and initial values; the manual
guide's variants and refusals; every guide fits a user's model. (The seeds' numbers that the
manual and mixture guides reach: tests/unit/test_models.py.)"""
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT
from numpyro import handlers
from numpyro.distributions import constraints

from runner.api import compose
from runner.data import coin_flips
from runner.errors import ConfigError
from runner.experiment import build
from runner.guides import auto, coin, gmm, manual, mixture, multimodal
from runner.models.coin import Coin
from runner.models.gaussian2d import Gaussian2D
from runner.models.gmm import GMM
from runner.models.multimodal import Multimodal

EXAMPLE = ROOT / "examples" / "my_project"
TUTORIAL = jnp.array([0.0, 1.0, 10.0, 11.0, 12.0])  # the GMM tutorial's data


def trace(guide, *args):
    return handlers.trace(handlers.seed(guide, 0)).get_trace(*args)


def sites(tr):
    """name -> (type, shape) of a trace (a flow's parameter pytree: 'tree')."""
    return {n: (s["type"], "tree" if isinstance(s["value"], (list, tuple, dict)) else np.shape(s["value"]))
            for n, s in tr.items()}


XY = {"x": ("sample", ()), "y": ("sample", ())}
AUTO = {  # builder: the guide's class and its sites on the 2-D Gaussian (latent sites x, y)
    "autodelta": ("AutoDelta", {"x_auto_loc": ("param", ()), "y_auto_loc": ("param", ()), **XY}),
    "autonormal": ("AutoNormal", {"x_auto_loc": ("param", ()), "x_auto_scale": ("param", ()), "y_auto_loc": ("param", ()),
                                  "y_auto_scale": ("param", ()), **XY}),
    "automvn": ("AutoMultivariateNormal", {"auto_loc": ("param", (2,)), "auto_scale_tril": ("param", (2, 2)),
                                           "_auto_latent": ("sample", (2,)), **XY}),
    "autolowrank": ("AutoLowRankMultivariateNormal", {"auto_loc": ("param", (2,)), "auto_cov_factor": ("param", (2, 1)),
                                                      "auto_scale": ("param", (2,)), "_auto_latent": ("sample", (2,)), **XY}),
    "autolaplace": ("AutoLaplaceApproximation", {"auto_loc": ("param", (2,)), "_auto_latent": ("sample", (2,)), **XY}),
    "autoiaf": ("AutoIAFNormal", {"auto_arn__0$params": ("param", "tree"), "auto_arn__1$params": ("param", "tree"),
                                  "auto_arn__2$params": ("param", "tree"), "_auto_latent": ("sample", (2,)), **XY}),
    "automixture": ("AutoMixtureMVN", {"auto_locs": ("param", (2, 2)), "auto_scale_tril": ("param", (2, 2, 2)),
                                       "_auto_latent": ("sample", (2,)), **XY}),
}
BUILDERS = {"autodelta": auto.autodelta, "autonormal": auto.autonormal, "automvn": auto.automvn,
            "autolowrank": auto.autolowrank, "autolaplace": auto.autolaplace, "autoiaf": auto.autoiaf,
            "automixture": mixture.automixture}


@pytest.mark.parametrize("name", list(AUTO))
def test_each_generic_builder_builds_its_guide_over_the_latent_sites(name):
    guide = BUILDERS[name](Gaussian2D(), None)
    cls, expected = AUTO[name]
    assert type(guide).__name__ == cls
    assert sites(trace(guide)) == expected


@pytest.mark.parametrize("choice, builder, settings", [
    ("autodelta", auto.autodelta, {}), ("autonormal", auto.autonormal, {"init_scale": 0.1}),
    ("automvn", auto.automvn, {"init_scale": 0.1}), ("autolowrank", auto.autolowrank, {"init_scale": 0.1, "rank": None}),
    ("autolaplace", auto.autolaplace, {}), ("autoiaf", auto.autoiaf, {"num_flows": 3, "hidden_dims": None}),
    ("mixture", mixture.automixture, {"K": 2, "init_scale": 0.1, "init_spread": 2.0}),
])
def test_the_guide_config_names_its_builder_and_settings(choice, builder, settings):
    exp = build(compose(["model=gaussian2d", f"guide={choice}", "steps=1"])[0])
    assert exp.inference.guide_builder.func is builder and exp.inference.guide_builder.keywords == settings
    exp = build(compose(["model=coin", "guide=manual"])[0])
    assert exp.inference.guide_builder.func is manual.manual and exp.inference.guide_builder.keywords == {"variant": None}


def test_enumerated_sites_are_left_to_the_elbo_and_init_values_are_used():
    """AutoDelta on the GMM: the globals only (the assignments are summed out by TraceEnum), each
    starting at the model's initial values for the restart."""
    model = GMM(K=2)
    init = model.init_values(jax.random.PRNGKey(0), TUTORIAL)
    tr = trace(auto.autodelta(model, init), TUTORIAL)
    assert [n for n, s in tr.items() if s["type"] == "sample"] == ["weights", "scale", "locs"]
    for site in ("weights", "scale", "locs"):
        np.testing.assert_array_equal(tr[f"{site}_auto_loc"]["value"], init[site])


def test_the_coin_guides_parameters():
    """Seed 004's two guides: Beta(alpha_q, beta_q) starting at Beta(10, 10); Normal(mean, var)
    starting at (0.5, 0.1), `var` a standard deviation under the seed's name."""
    data = jnp.asarray(coin_flips(12, 8))
    tr = trace(coin.beta_guide(Coin()), data)
    assert sites(tr) == {"alpha_q": ("param", ()), "beta_q": ("param", ()), "latent_fairness": ("sample", ())}
    assert (float(tr["alpha_q"]["value"]), float(tr["beta_q"]["value"])) == (10.0, 10.0)
    assert all(tr[p]["kwargs"]["constraint"] is constraints.positive for p in ("alpha_q", "beta_q"))
    fn = tr["latent_fairness"]["fn"]
    assert type(fn).__name__ == "Beta" and (float(fn.concentration1), float(fn.concentration0)) == (10.0, 10.0)
    tr = trace(coin.normal_guide(Coin()), data)
    assert (float(tr["mean"]["value"]), float(tr["var"]["value"])) == (0.5, pytest.approx(0.1))
    assert tr["mean"]["kwargs"]["constraint"] is constraints.unit_interval
    assert tr["var"]["kwargs"]["constraint"] is constraints.positive
    fn = tr["latent_fairness"]["fn"]
    assert type(fn).__name__ == "Normal" and (float(fn.loc), float(fn.scale)) == (0.5, pytest.approx(0.1))


def test_manual_picks_the_models_variant_and_refuses_the_rest():
    assert manual.resolve(Coin()) is coin.beta_guide  # the first is the default
    assert manual.resolve(Coin(), "normal") is coin.normal_guide
    assert manual.resolve(GMM(K=2)) is gmm.full_guide and manual.resolve(Multimodal()) is multimodal.mixture_guide
    with pytest.raises(ConfigError, match=r"^model 'coin' has no manual guide 'beat': guide.variant must be one of "
                                          r"\['beta', 'normal'\]$"):
        manual.resolve(Coin(), "beat")
    with pytest.raises(ConfigError, match=r"^model 'gaussian2d' has no manual guide: choose another guide= "
                                          r"\(autodelta, autonormal, automvn, autolowrank, autolaplace, autoiaf, "
                                          r"mixture\)$"):
        manual.resolve(Gaussian2D())
    with pytest.raises(ConfigError, match="^guide=manual needs a runner model, got dict$"):
        manual.manual({"manual_guides": {"a": "subprocess.call"}}, None, "a")  # a dict's keys are never run


def test_the_gmm_full_guide_starts_at_the_e_step():
    """assignment_probs start at the responsibilities under the restart's initial globals,
    w_k N(x | mu_k, s) normalised per point (uniform without initial values)."""
    from scipy.stats import norm

    model = GMM(K=2)
    init = {"weights": jnp.array([0.3, 0.7]), "locs": jnp.array([0.5, 11.0]), "scale": jnp.array(2.0)}
    tr = trace(gmm.full_guide(model, init), TUTORIAL)
    joint = np.array([0.3, 0.7]) * norm.pdf(np.asarray(TUTORIAL)[:, None], [0.5, 11.0], 2.0)
    expected = np.clip(joint / joint.sum(1, keepdims=True), 1e-6, 1.0)
    np.testing.assert_allclose(tr["assignment_probs"]["value"], expected / expected.sum(1, keepdims=True), rtol=1e-5)
    assert tr["assignment"]["infer"] == {"enumerate": "parallel"} and tr["assignment"]["value"].shape == (5,)
    assert gmm.responsibilities(None, TUTORIAL) is None
    tr = trace(gmm.full_guide(model, None), TUTORIAL)
    np.testing.assert_allclose(tr["assignment_probs"]["value"], np.full((5, 2), 0.5))


def test_the_multimodal_guide_rotates_two_auxiliary_draws_onto_x_and_y():
    tr = trace(multimodal.mixture_guide(Multimodal()))
    assert {p: float(tr[p]["value"]) for p in ("sig1_q", "sig2_q", "b", "theta")} == {
        "sig1_q": 1.0, "sig2_q": 1.0, "b": 1.0, "theta": 0.0}
    assert tr["u1"]["infer"] == {"is_auxiliary": True} and tr["u2"]["infer"] == {"is_auxiliary": True}
    # theta = 0: no rotation, x is u1 and y is u2 (Delta sites)
    assert float(tr["x"]["value"]) == float(tr["u1"]["value"]) and float(tr["y"]["value"]) == float(tr["u2"]["value"])
    assert type(tr["x"]["fn"]).__name__ == "Delta"


def test_the_mixture_guides_components_are_balanced_around_the_centre():
    guide = mixture.automixture(Gaussian2D(), None, K=3, init_scale=0.2, init_spread=1.5)
    tr = trace(guide)
    locs = np.asarray(tr["auto_locs"]["value"])
    assert locs.shape == (3, 2) and np.ptp(locs, axis=0).min() > 0  # spread apart
    np.testing.assert_allclose(locs.mean(0), guide._init_latent, atol=1e-6)  # around the centre
    assert np.abs(locs - guide._init_latent).max() <= 2 * 1.5
    np.testing.assert_allclose(tr["auto_scale_tril"]["value"], np.broadcast_to(np.eye(2) * 0.2, (3, 2, 2)))


GUIDES = ["autodelta", "autonormal", "automvn", "autolowrank", "autolaplace", "autoiaf", "mixture"]


def regression_data():
    xy = np.loadtxt(EXAMPLE / "regression.csv", delimiter=",", skiprows=1, dtype=np.float32)
    return xy[:, 0], xy[:, 1]


@pytest.mark.parametrize("guide", GUIDES)
def test_every_guide_fits_a_user_model(guide):
    """Every guide on the user's regression (examples/my_project), with restarts; the slope lands
    near least squares' (loose: few steps; autodelta/autolaplace at the MAP)."""
    from runner.api import fit_config

    sys.path.insert(0, str(EXAMPLE))
    try:
        exp, r = fit_config(["model=regression", f"guide={guide}", "steps=1500",
                             "restarts=2", "optim.lr=0.05", f"data.path={EXAMPLE / 'regression.csv'}"],
                            config_dir=EXAMPLE / "conf")
    finally:
        sys.path.remove(str(EXAMPLE))
    x, y = regression_data()
    slope, _ = np.polyfit(x, y, 1)
    assert np.isfinite(r.losses).all()
    beta = np.asarray(r.samples["beta"])
    assert beta.shape[0] == 2000
    assert abs(np.median(beta) - slope) < 0.1, (guide, np.median(beta), slope)
    if guide == "autolaplace":  # draws from the Laplace Gaussian, not the MAP point
        assert beta.std() > 0.01
