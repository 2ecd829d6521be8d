"""data.batch_size (runner/inference/svi/method.py, features.py): B rows per step inside the compiled
program, the data plates' sites scaled by N/B (NumPyro's plate subsampling from outside the
model), the final losses on the full data; refused with one line where it cannot work."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT

import runner
from runner.errors import ConfigError
from runner.inference.svi.features import scale_plates


@pytest.mark.slow  # many minibatch draws of the ELBO (7 s); make test runs it
def test_the_scaled_minibatch_elbo_is_unbiased():
    """E over random batches of the N/B-scaled ELBO = the full ELBO (GMM tutorial model at fixed
    params, enumerated assignments: a deterministic objective, so the check is exact up to MC)."""
    from numpyro.infer import TraceEnum_ELBO

    from runner.guides.auto import autodelta
    from runner.models.gmm import GMM

    rng = np.random.default_rng(0)
    data = jnp.asarray(np.concatenate([rng.normal(0, 1, 60), rng.normal(10, 1, 40)]), jnp.float32)
    model = GMM(K=2)
    guide = autodelta(model, {"weights": jnp.array([0.6, 0.4]), "locs": jnp.array([0.0, 10.0]), "scale": jnp.array(1.0)})
    elbo = TraceEnum_ELBO()
    params = {"weights_auto_loc": jnp.array([0.6, 0.4]), "locs_auto_loc": jnp.array([0.0, 10.0]),
              "scale_auto_loc": jnp.array(1.0)}
    full = elbo.loss(jax.random.PRNGKey(0), params, model, guide, data)
    scaled = scale_plates(model, frozenset({"data"}), 100 / 20)

    def batch_loss(k):
        rows = jax.random.choice(k, 100, (20,), replace=False)
        return elbo.loss(k, params, scaled, guide, data[rows])

    estimates = jax.vmap(batch_loss)(jax.random.split(jax.random.PRNGKey(1), 4000))
    assert float(estimates.mean()) == pytest.approx(float(full), rel=0.01)
    assert float(estimates.std()) > 1.0  # the batches do differ


def test_seed_003_sgd_with_minibatches_reaches_the_full_batch_loss():
    """Bernoulli mixture, K=10, binarised digits, Adam 0.1: batches of 500 of the 1797 images
    end within 1% of the full-batch fit, scored on the full data."""
    common = ["model=bmm", "steps=300", "restarts=2"]
    _, full = runner.fit_config(common)
    exp, batch = runner.fit_config(common + ["data.batch_size=500"])
    assert exp.inference.batch_size == 500 and exp.inference.rows == 1797
    assert exp.inference.data_plates == frozenset({"data"})
    assert batch.final_loss == pytest.approx(full.final_loss, rel=0.01)


@pytest.mark.parametrize("overrides, message", [
    (["model=gmm", "inference=em", "data.batch_size=2"], "data.batch_size applies to inference=svi, not inference=em"),
    (["model=gmm", "data.batch_size=5"], r"data.batch_size must be between 1 and the number of rows - 1 \(4\), got 5"),
    (["model=gmm", "data.batch_size=0"], "data.batch_size must be a positive integer or null, got 0"),
    (["model=gmm", "optim=lbfgs", "steps=5", "data.batch_size=2"], "optim=lbfgs needs the full data at every step"),
    (["model=fn", "model.fn=mymodels.eight_schools", "data=json", "data.path=eight_schools.json", "data.batch_size=4"],
     r"latent sites in the data's plate \['theta_tilde'\]"),
])
def test_refusals(overrides, message, monkeypatch):
    project = ROOT / "examples" / "my_project"
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    cfg, _ = runner.compose(overrides)
    with pytest.raises(ConfigError, match=message):
        runner.build(cfg)
