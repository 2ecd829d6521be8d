"""runner/posterior.py in-process: the latent, observed and enumerated sites, MAP assignments and
the GMM full guide's assignment probabilities, the post-fit programs compiled once per model
family and settings, Predictive posterior draws from a fitted guide."""
import json

import numpy as np
import pytest
from conftest import EXAMPLE, run_recorded, same_partition, user_module

pytestmark = pytest.mark.usefixtures("xla_cache")


def test_map_assignments_and_full_guide_probs(tmp_path):
    _, out = run_recorded(tmp_path / "run", "model=gmm", "guide=manual")
    run_dir = out.run_dir
    out = json.loads((run_dir / "assignments.json").read_text())
    assert same_partition(out["assignment"], [0, 0, 1, 1, 1])
    probs = np.asarray(out["assignment_probs"])
    assert probs.shape == (5, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert (probs.argmax(1) == out["assignment"]).all()


def test_compiled_assignments_and_loglik_are_per_model_settings():
    """The post-fit programs (MAP assignments, avg_loglik) are compiled once per model family and
    settings: an equal model reuses them, a different K or scale gets its own, and the answers are
    the closed form: argmax_k w_k N(x | mu_k, s) and mean_n log sum_k w_k N(x_n | mu_k, s)."""
    from scipy.stats import norm

    from runner.models.gmm import GMM
    from runner import posterior
    from runner.models.mixtures import average_loglik

    x = np.array([-1.0, 0.2, 4.0, 5.5, 9.0])
    posterior._PROGRAMS.clear()  # (in-process tests before this one may have made some)
    cases = [(GMM(K=2), {"weights": np.array([0.4, 0.6]), "locs": np.array([0.0, 5.0]), "scale": np.array(1.0)}),
             (GMM(K=2), {"weights": np.array([0.5, 0.5]), "locs": np.array([0.0, 9.0]), "scale": np.array(2.0)}),
             (GMM(K=3), {"weights": np.array([0.2, 0.3, 0.5]), "locs": np.array([0.0, 5.0, 9.0]),
                         "scale": np.array(0.7)}),
             (GMM(K=3, scale=3.0), {"weights": np.array([0.2, 0.3, 0.5]), "locs": np.array([0.0, 5.0, 9.0])})]
    for model, lat in cases:
        s = model.fixed_scale or float(lat["scale"])
        joint = np.log(lat["weights"]) + norm.logpdf(x[:, None], lat["locs"][None], s)
        assert (posterior.assignments(model, lat, x)["assignment"] == joint.argmax(1)).all()
        ll = np.log(np.exp(joint).sum(1)).mean()
        assert average_loglik(model, lat, x) == pytest.approx(ll, rel=1e-5)
    keys = [k for k in posterior._PROGRAMS if k[0] is GMM]
    assert len(keys) == 3 * 2  # K=2, K=3, K=3 with a fixed scale; two programs each
    assert posterior.model_program(GMM(K=2), ("e_step", "latents"), lambda: None) is not None  # reused, not rebuilt


def test_posterior_samples_from_the_coin_guide(tmp_path):
    record, out = run_recorded(tmp_path / "run", "model=coin", "guide=manual", "posterior.samples=4000")
    run_dir = out.run_dir
    with np.load(run_dir / "posterior.npz", allow_pickle=False) as z:
        f, obs = z["latent_fairness"], z["obs"]
    assert f.shape == (4000,) and obs.shape == (4000, 20) and set(np.unique(obs)) <= {0.0, 1.0}
    # the exact posterior is Beta(1 + 12, 1 + 8): mean 13/22; the mock data's heads rate follows it
    assert f.mean() == pytest.approx(13 / 22, abs=0.02)
    assert obs.mean() == pytest.approx(f.mean(), abs=0.02)
    assert "plots/posterior_predictive.png" in record["artifacts"]
    assert (run_dir / "plots" / "posterior_predictive.png").is_file()


def test_observed_site_is_matched_to_its_own_data():
    """The posterior predictive plot compares y with y: the observed site maps to the array the
    function passed as obs=, never to the covariate x."""
    from runner.data import csv_file
    from runner.models.function import FunctionModel
    from runner.posterior import observed_data

    model = FunctionModel(user_module().regression)
    data = model.bind(csv_file(str(EXAMPLE / "regression.csv")))
    found = observed_data(model, data)
    assert list(found) == ["y"] and found["y"] is data["y"]
