"""The seeds' own numbers, reproduced by the default settings of each model (seeds 000 and 004)."""
import math

import numpy as np
import pytest

from runner.models.gaussian2d import principal_axes
from runner.api import fit_config

pytestmark = pytest.mark.slow

# seed 000: weights = [0.375 0.625], locs = [0.4989534 10.984944], scale = 0.6514341831207275,
# best initial loss 25.1498 and "avg. loss [191-200]: 17.4433"
GMM_WEIGHTS, GMM_LOCS, GMM_SCALE, GMM_LOSS = [0.375, 0.625], [0.4989534, 10.984944], 0.6514342, 17.4433


def sorted_by_loc(params):
    order = np.argsort(params["locs_auto_loc"])
    return params["weights_auto_loc"][order], params["locs_auto_loc"][order]


@pytest.fixture(scope="module")
def gmm_tutorial():
    return fit_config(["model=gmm", "guide=autodelta"])


def test_gmm_tutorial_settings_are_the_defaults(gmm_tutorial):
    exp, _ = gmm_tutorial
    assert (exp.inference.steps, exp.restarts, exp.inference.select) == (200, 100, "initial")
    assert type(exp.inference.loss).__name__ == "TraceEnum_ELBO"
    assert exp.inference.deterministic  # AutoDelta + enumeration: exact objective


def test_gmm_tutorial_numbers(gmm_tutorial):
    _, r = gmm_tutorial
    weights, locs = sorted_by_loc(r.params)
    np.testing.assert_allclose(weights, GMM_WEIGHTS, atol=2e-3)
    np.testing.assert_allclose(locs, GMM_LOCS, atol=5e-3)
    assert r.params["scale_auto_loc"] == pytest.approx(GMM_SCALE, abs=2e-3)
    assert r.initial_loss == pytest.approx(25.1498, abs=0.02)  # the tutorial's best initial loss
    assert r.final_loss == pytest.approx(r.losses[0, -1])  # deterministic: the last step
    assert np.mean(r.losses[0, -10:]) == pytest.approx(GMM_LOSS, abs=2e-3)
    # select=initial trains exactly the restart with the lowest initial loss
    assert r.best == int(np.argmin(r.initial_losses)) and list(r.trained) == [r.best]


def test_gmm_select_final_is_no_worse():
    _, r = fit_config(["model=gmm", "guide=autodelta", "select=final"])
    assert r.losses.shape == (100, 200)
    assert r.final_loss <= GMM_LOSS + 1e-3
    assert r.final_loss == pytest.approx(np.nanmin(r.final_losses))
    assert r.best == int(np.nanargmin(r.final_losses))


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
    exp, r = fit_config(["model=coin", "guide=manual"])
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


def test_ten_thousand_restarts():
    _, r = fit_config(["model=gmm", "guide=autodelta", "restarts=10000", "steps=20"])
    assert r.initial_losses.shape == (10000,) and np.isfinite(r.initial_losses).all()
    assert r.initial_losses.min() == pytest.approx(25.1498, abs=0.02)
