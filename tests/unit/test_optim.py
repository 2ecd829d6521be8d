"""runner/optim.py: the optimizer configs give the documented learning rates (a model's hints, else
Adam 0.001 and SGD 0.01), the optax transforms step as optax does, the cosine schedule's values,
the refusals, and jaxopt's L-BFGS (deterministic objectives only: one fixed key)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from runner.api import compose
from runner.checks import instantiate
from runner.errors import ConfigError
from runner.optim import LBFGS, OptaxOptimizer, cosine_schedule, lbfgs, optax_transform

G = jnp.array([2.0, -0.5])  # a constant gradient: the loss sum(G * p)


def linear(p, key):
    return jnp.sum(G * p["w"])


def optimizer(overrides):
    cfg, _ = compose([*overrides, "steps=100"])
    return cfg.optim, instantiate(cfg.optim, "optim")


@pytest.mark.parametrize("overrides, lr, rest", [
    (["optim=adam", "~hints"], 0.001, {"b1": 0.9, "b2": 0.999}),  # no hints: runner's general defaults
    (["optim=sgd", "~hints"], 0.01, {"momentum": None, "nesterov": False}),
    (["optim=adamw", "~hints"], 0.001, {"b1": 0.9, "b2": 0.999, "weight_decay": 1e-4}),
    (["model=gmm"], 0.1, {"b1": 0.8, "b2": 0.99}),  # the GMM tutorial's Adam(0.1, betas=(0.8, 0.99))
    (["model=coin"], 0.0005, {"b1": 0.9, "b2": 0.999}),  # seed 004's Adam(0.0005)
])
def test_configs_give_the_documented_rates(overrides, lr, rest):
    node, opt = optimizer(overrides)
    assert node.lr == lr and {k: node[k] for k in rest} == rest
    assert type(opt) is OptaxOptimizer and not opt.needs_deterministic


def test_sgd_steps_by_minus_lr_times_the_gradient():
    _, opt = optimizer(["optim=sgd", "~hints"])
    p = {"w": jnp.array([1.0, -2.0])}
    state = opt.init(p, linear)
    new, state, loss, grads = opt.step(p, state, linear, jax.random.PRNGKey(0))
    np.testing.assert_allclose(new["w"], p["w"] - 0.01 * G, rtol=1e-6)
    assert float(loss) == pytest.approx(3.0) and np.allclose(grads["w"], G)


def test_adams_first_step_is_lr_against_the_gradients_sign():
    _, opt = optimizer(["model=gmm"])  # lr 0.1
    p = {"w": jnp.array([1.0, -2.0])}
    new, *_ = opt.step(p, opt.init(p, linear), linear, jax.random.PRNGKey(0))
    np.testing.assert_allclose(new["w"] - p["w"], -0.1 * np.sign(G), rtol=1e-6)  # bias-corrected m / sqrt(v)


def test_cosine_schedule_values():
    s = cosine_schedule(init_value=0.1, decay_steps=100)
    np.testing.assert_allclose([float(s(t)) for t in (0, 25, 50, 100, 150)],
                               [0.1, 0.05 * (1 + np.cos(np.pi / 4)), 0.05, 0.0, 0.0], atol=1e-7)
    s = cosine_schedule(init_value=0.1, decay_steps=100, alpha=0.1)  # decays to alpha * lr
    np.testing.assert_allclose([float(s(t)) for t in (0, 50, 100)], [0.1, 0.055, 0.01], rtol=1e-6)


def test_adam_cosine_decays_the_step_size_over_the_run():
    """optim=adam_cosine: Adam's step under a constant gradient is the scheduled rate itself,
    from optim.lr (the GMM's 0.1) at step 0 to 0 at `steps`."""
    node, opt = optimizer(["model=gmm", "optim=adam_cosine"])
    assert node.schedule.decay_steps == 100 and node.schedule.alpha == 0.0
    p = {"w": jnp.array([1.0, -2.0])}
    state, sizes = opt.init(p, linear), []
    update = jax.jit(opt.tx.update)
    for _ in range(100):
        step, state = update({"w": G}, state, p)  # the step optax would apply (params unchanged)
        sizes.append(-float(step["w"][0]))
    expected = [0.05 * (1 + np.cos(np.pi * t / 100)) for t in range(100)]
    np.testing.assert_allclose(sizes, expected, rtol=1e-4)  # (float32 near the end of the cosine)


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="nope"), r"^optim.name='nope' is not an optax optimizer \(e.g. adam, sgd, adamw\)$"),
    (dict(name="_src"), r"^optim.name='_src' is not an optax optimizer"),
    (dict(name="adam", lr=0), r"^optim.lr must be a positive finite number, got 0$"),
    (dict(name="adam", lr=-1e-3), r"^optim.lr must be a positive finite number, got -0.001$"),
    (dict(name="adam", lr=float("nan")), r"^optim.lr must be a positive finite number, got nan$"),
    (dict(name="adam", lr=0.1, bogus=1), r"^optim 'adam': .*bogus"),
])
def test_refusals_are_one_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        optax_transform(**kwargs)


def test_lbfgs_needs_a_deterministic_objective_and_takes_integer_settings():
    opt = lbfgs(history_size="5", maxls=3.0)  # as a config may spell them
    assert opt == LBFGS(history_size=5, maxls=3) and opt.needs_deterministic
    _, built = optimizer(["optim=lbfgs"])
    assert built == LBFGS(history_size=10, maxls=15)


def test_lbfgs_minimises_with_one_fixed_key():
    """The objective's key is fixed (PRNGKey(fixed_key_seed)), whatever key a step is given: the
    minimum found is that key's."""
    def loss_fn(p, key):
        target = jax.random.uniform(key, (2,)) * 10
        return jnp.sum((p["w"] - target) ** 2)

    opt = lbfgs()
    p = {"w": jnp.zeros(2)}
    state = opt.init(p, loss_fn)
    for i in range(5):
        p, state, loss, grads = opt.step(p, state, loss_fn, jax.random.PRNGKey(100 + i))
    fixed = jax.random.uniform(jax.random.PRNGKey(0), (2,)) * 10
    np.testing.assert_allclose(p["w"], fixed, rtol=1e-5)
    assert float(loss) == pytest.approx(0.0, abs=1e-8) and float(loss) == float(state.value)
