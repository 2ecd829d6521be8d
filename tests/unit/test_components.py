"""runner/models/components.py: a mixture's observation given its component, as an (N, K) table of
matrix products. The numbers are NumPyro's own (Normal / Bernoulli of the gathered parameters, the
(K, N, D) form), and the compiled ELBO and EM step of MNIST-size data never hold N x K x D."""
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

from runner.models.bmm import BMM
from runner.models.components import BernoulliComponents, DiagNormalComponents
from runner.models.gmm import GMM

N, K, D = 40, 3, 6


@pytest.fixture
def params():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    return dict(x=jax.random.normal(k1, (N, D)), locs=jax.random.normal(k2, (K, D)),
                scale=jnp.linspace(0.5, 2.0, D), probs=jax.nn.sigmoid(jax.random.normal(k3, (K, D))))


@pytest.mark.parametrize("index", ["enumerated", "sampled"])
def test_log_prob_is_numpyros(params, index):
    idx = jnp.arange(K)[:, None] if index == "enumerated" else jax.random.randint(jax.random.PRNGKey(1), (N,), 0, K)
    x, locs, scale, probs = params["x"], params["locs"], params["scale"], params["probs"]
    ours = DiagNormalComponents(locs, scale, idx).log_prob(x)
    theirs = dist.Normal(locs[idx], scale).to_event(1).log_prob(x)
    assert ours.shape == theirs.shape == ((K, N) if index == "enumerated" else (N,))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)
    xb = (x > 0).astype(jnp.float32)
    np.testing.assert_allclose(BernoulliComponents(probs, idx).log_prob(xb),
                               dist.Bernoulli(probs[idx]).to_event(1).log_prob(xb), rtol=1e-5, atol=1e-4)


def test_samples_have_the_components_moments(params):
    idx = jnp.zeros(20000, int)
    draws = DiagNormalComponents(params["locs"], params["scale"], idx).sample(jax.random.PRNGKey(2))
    np.testing.assert_allclose(draws.mean(0), params["locs"][0], atol=0.05)
    np.testing.assert_allclose(draws.std(0), params["scale"], rtol=0.03)
    flips = BernoulliComponents(params["probs"], idx).sample(jax.random.PRNGKey(3))
    np.testing.assert_allclose(flips.mean(0), params["probs"][0], atol=0.02)


def test_em_updates_are_scikit_learns_formulas(params):
    """em_log_joint and em_m_step as matrix products equal the direct (N, K, D) formulas."""
    x = params["x"]
    resp = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(4), (N, K)), -1)
    gmm = GMM(K=K)
    new = gmm.em_m_step(resp, x, 1e-6)
    nk = resp.sum(0)
    direct = jnp.einsum("nk,nkd->kd", resp, (x[:, None] - new["locs"][None]) ** 2) / nk[:, None] + 1e-6
    np.testing.assert_allclose(new["variances"], direct, rtol=1e-4)
    log_pdf = -0.5 * (jnp.log(2 * jnp.pi * new["variances"])[None]
                      + (x[:, None] - new["locs"][None]) ** 2 / new["variances"][None]).sum(-1)
    np.testing.assert_allclose(gmm.em_log_joint(new, x), jnp.log(new["weights"]) + log_pdf, rtol=1e-4, atol=1e-3)


def peak_bytes(fn, *shapes) -> int:
    """The temporary memory XLA plans for fn on abstract inputs (nothing is computed)."""
    compiled = jax.jit(fn).lower(*[jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]).compile()
    return compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("family", ["gmm", "bmm"])
def test_mnist_size_elbo_and_em_never_hold_n_k_d(family):
    """60000 x 784 images, K=20: N x K x D float32 is 3.8 GB (the (K, N, D) form's ELBO gradient
    planned 15 GB); the enumerated ELBO's gradient and one EM iteration plan a few copies of the
    data (N x D), not of N x K x D."""
    from numpyro.infer import TraceEnum_ELBO

    from runner.guides.auto import autodelta

    n, k, d = 60000, 20, 784
    model = GMM(K=k, scale=0.2) if family == "gmm" else BMM(K=k)
    site = "locs" if family == "gmm" else "probs"

    def loss(value, weights, data):
        guide = autodelta(model)
        params = {f"{site}_auto_loc": value, "weights_auto_loc": weights}
        return TraceEnum_ELBO().loss(jax.random.PRNGKey(0), params, model, guide, data)

    def em_step(value, weights, data):
        from runner.models.mixtures import e_step

        key = "locs" if family == "gmm" else "probs"
        p = {"weights": weights, key: value, **({"variances": jnp.ones((k, d))} if family == "gmm" else {})}
        _, resp = e_step(model, p, data)
        return model.em_m_step(resp, data, 1e-6)

    nd = n * d * 4
    assert peak_bytes(jax.grad(loss), (k, d), (k,), (n, d)) < 3 * nd
    assert peak_bytes(em_step, (k, d), (k,), (n, d)) < 3 * nd
