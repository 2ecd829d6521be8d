"""runner/inference/em.py in-process: EM against scikit-learn on digits, the Bernoulli mixture
against the one-component likelihood, EM updates attached to a user's function, MNIST from IDX
files, the average log-likelihood that scores an SVI fit on EM's scale, and what EM refuses.
(EM's initialisation against scikit-learn's: test_em_sklearn.py; through the CLI and MLflow: the
README's commands, tests/e2e/test_readme.py, and tests/e2e/test_predict.py.)"""
import json
import sys

import numpy as np
import pytest
from conftest import run_recorded, same_partition, write_idx

from runner.api import compose
from runner.data import digits
from runner.errors import ConfigError
from runner.experiment import build


def test_em_gmm_on_digits_matches_sklearn(tmp_path):
    from sklearn.mixture import GaussianMixture

    R = 4
    record, out = run_recorded(tmp_path / "run", "model=gmm", "data=digits", "model.K=10", "inference=em",
                               f"restarts={R}")
    m = record["scalars"]
    X = digits()
    sk = GaussianMixture(10, covariance_type="diag", n_init=R, random_state=0).fit(X).score(X)
    assert m["avg_loglik"] >= sk - 0.01 * abs(sk), (m["avg_loglik"], sk)
    assert m["final_loss"] == pytest.approx(-m["avg_loglik"])
    assert record["tags"]["inference"] == "em" and "guide" not in record["tags"]
    # per-iteration history: as many points as iterations, EM never decreases the likelihood
    hist = record["curves"]["loglik"][:m["iterations"]]
    assert len(hist) == m["iterations"] > 2
    assert np.all(np.diff(hist) >= -1e-3)
    arts = {a for a in record["artifacts"] if a.startswith("plots/")}
    assert arts == {"plots/loglik.png", "plots/components.png"}
    assign = json.loads((out.run_dir / "assignments.json").read_text())["assignment"]
    assert len(assign) == len(X) and set(assign) <= set(range(10))


def test_em_bmm_beats_one_component_and_is_monotone(tmp_path):
    record, _ = run_recorded(tmp_path / "run", "model=bmm", "inference=em", "restarts=2")
    X = digits(binarize=0.5)
    p = np.clip(X.mean(0), 1e-6, 1 - 1e-6)  # the K=1 maximum likelihood, analytic
    one = float(np.mean(X @ np.log(p) + (1 - X) @ np.log1p(-p)))
    m = record["scalars"]
    assert m["avg_loglik"] > one + 5, (m["avg_loglik"], one)
    hist = record["curves"]["loglik"]
    assert np.all(np.diff(hist) >= -1e-3)


def test_svi_on_digits_logs_the_same_loglik_scale(tmp_path):
    """inference=svi on the same data logs avg_loglik too (the UI compares EM and SGD): EM's
    e_step at the SVI point estimate."""
    from scipy.special import logsumexp

    record, out = run_recorded(tmp_path / "run", "model=gmm", "data=digits", "data.n=300", "model.K=3", "steps=50",
                               "restarts=2", "optim.lr=0.1")
    m = record["scalars"]
    latents = json.loads((out.run_dir / "latents.json").read_text())
    X = digits(n=300)
    var = np.maximum(np.asarray(latents["scale"]) ** 2, 1e-6)  # floored at reg_covar, as documented
    locs, w = np.asarray(latents["locs"]), np.asarray(latents["weights"])
    log_pdf = -0.5 * (np.log(2 * np.pi * var) + (X[:, None, :] - locs[None]) ** 2 / var).sum(-1)
    assert m["avg_loglik"] == pytest.approx(float(logsumexp(np.log(w) + log_pdf, axis=1).mean()), rel=1e-4)


def test_mnist_from_idx_files(tmp_path):
    rng = np.random.default_rng(1)
    ink = np.zeros((40, 28, 28), np.uint8)
    ink[:20, :14] = 255  # two obvious clusters: top half inked or bottom half inked
    ink[20:, 14:] = 255
    ink = np.where(rng.random(ink.shape) < 0.05, 255 - ink, ink)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", ink, True)
    record, out = run_recorded(tmp_path / "run", "model=bmm", "data=mnist", f"data.path={tmp_path}",
                               "data.binarize=0.5", "model.K=2", "inference=em", "restarts=2")
    assign = json.loads((out.run_dir / "assignments.json").read_text())["assignment"]
    assert same_partition(assign, [0] * 20 + [1] * 20)
    assert record["params"]["data.n"] == "2000"


def test_em_extras_on_a_user_function(tmp_path, monkeypatch):
    """EM updates attached to a plain function (runner.model_extras): the same numbers as the
    built-in GMM's EM on the same data, since the updates here are the built-in's own formulas."""
    from sklearn.datasets import load_digits

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    X = (load_digits().data / 16.0).astype(np.float32)
    np.savez(tmp_path / "digits.npz", data=X, K=np.array(10))
    (tmp_path / "mine.py").write_text(
        "import jax.numpy as jnp\nimport numpyro\nimport numpyro.distributions as dist\nimport runner\n"
        "from runner.models.gmm import GMM\n\n"
        "def gmm_diag(data, K):\n"
        "    w = numpyro.sample('weights', dist.Dirichlet(jnp.ones(K)))\n"
        "    with numpyro.plate('components', K):\n"
        "        locs = numpyro.sample('locs', dist.Normal(0.0, 10.0).expand([data.shape[1]]).to_event(1))\n"
        "        scale = numpyro.sample('scale', dist.LogNormal(0.0, 2.0).expand([data.shape[1]]).to_event(1))\n"
        "    with numpyro.plate('data', data.shape[0]):\n"
        "        z = numpyro.sample('z', dist.Categorical(w), infer={'enumerate': 'parallel'})\n"
        "        numpyro.sample('obs', dist.Normal(locs[z], scale[z]).to_event(1), obs=data)\n\n"
        "_diag = GMM(K=10)  # the diagonal-GMM updates (a user would write their own)\n"
        "runner.model_extras(em_init=_diag.em_init, em_log_joint=_diag.em_log_joint, em_m_step=_diag.em_m_step,\n"
        "                    em_params=lambda l: {'weights': l['weights'], 'locs': l['locs'],\n"
        "                                         'variances': l['scale'] ** 2})(gmm_diag)\n")
    try:
        mine, _ = run_recorded(tmp_path / "mine", "model=fn", "model.fn=mine.gmm_diag", "data=npz",
                               "data.path=digits.npz", "inference=em", "restarts=2")
    finally:
        sys.modules.pop("mine", None)
    builtin, _ = run_recorded(tmp_path / "builtin", "model=gmm", "data=digits", "model.K=10", "inference=em",
                              "restarts=2")
    a = json.loads((tmp_path / "mine" / "metrics.json").read_text())["scalars"]
    b = json.loads((tmp_path / "builtin" / "metrics.json").read_text())["scalars"]
    assert a["avg_loglik"] == pytest.approx(b["avg_loglik"], rel=1e-6) and a["iterations"] == b["iterations"]
    za = json.loads((tmp_path / "mine" / "assignments.json").read_text())
    zb = json.loads((tmp_path / "builtin" / "assignments.json").read_text())
    assert za["z"] == zb["assignment"]


def test_posterior_samples_refused_for_em():
    cfg, _ = compose(["model=gmm", "inference=em", "posterior.samples=10"])
    with pytest.raises(ConfigError) as e:
        build(cfg)
    assert str(e.value) == ("posterior.samples needs a posterior: use inference=svi or inference=nuts "
                            "(EM gives a point estimate)")


def test_e_step_is_the_closed_form_responsibilities():
    """EM's E-step on a two-component GMM: the average log-likelihood and the responsibilities of
    log w_k + log N(x | mu_k, s), normalised per point."""
    from scipy.stats import norm

    from runner.models.mixtures import e_step
    from runner.models.gmm import GMM

    x = np.array([-1.0, 0.2, 4.0, 5.5, 9.0], np.float32)
    params = {"weights": np.array([0.4, 0.6]), "locs": np.array([[0.0], [5.0]]), "variances": np.ones((2, 1))}
    model = GMM(K=2)  # EM's parameters per component and dimension (here one)
    joint = np.log(params["weights"]) + norm.logpdf(x[:, None], [0.0, 5.0], 1.0)
    ll, resp = e_step(model, {k: v.astype(np.float32) for k, v in params.items()}, x)
    assert float(ll) == pytest.approx(np.log(np.exp(joint).sum(1)).mean(), rel=1e-5)
    np.testing.assert_allclose(resp, np.exp(joint) / np.exp(joint).sum(1, keepdims=True), rtol=1e-4, atol=1e-6)
