"""runner/inference/svi/program.py keeps what is logged, not a value per step: the compiled
fit's state is the same size for 10^4 and 10^6 steps (the curves at tracking.max_points_per_curve
steps, running summaries, step keys computed when needed), and the curves keep the right steps."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import runner
from runner.inference.svi.program import curve_steps, make_programs, nth_key


def state_bytes(steps: int, restarts: int = 500) -> int:
    cfg, _ = runner.compose(["model=gmm", "select=final", f"restarts={restarts}", f"steps={steps}"])
    exp = runner.build(cfg)
    programs = make_programs(exp)
    roots = jax.ShapeDtypeStruct((1, 2), jnp.uint32)
    data = jax.ShapeDtypeStruct(np.shape(exp.data), jnp.float32)
    return programs.prepare.lower(roots, data).compile().memory_analysis().output_size_in_bytes


def test_the_fit_state_does_not_grow_with_steps():
    small, large = state_bytes(10_000), state_bytes(1_000_000)
    assert large <= 1.01 * small
    # 500 restarts x 2001 points x (loss + 3 gradient norms) float32, plus parameters and keys
    assert large < 500 * 2001 * 4 * 4 * 1.2


def test_curve_points_and_step_keys():
    assert list(curve_steps(5, 2000)) == [0, 1, 2, 3, 4]
    kept = curve_steps(10_000, 100)
    assert len(kept) == 101 and kept[1] == 100 and kept[-1] == 9999
    key = jax.random.PRNGKey(7)
    np.testing.assert_array_equal(jax.vmap(nth_key, (None, 0))(key, jnp.arange(50)), jax.random.split(key, 50))


def test_a_capped_curve_has_the_final_loss_of_every_step():
    """With 5000 steps and 100 points the curve is strided, and the final loss is still the mean
    of the last 500 steps (the same number as with every step kept)."""
    common = ["model=coin", "guide=manual", "steps=5000", "optim.lr=0.005"]
    _, full = runner.fit_config(common + ["tracking.max_points_per_curve=null"])
    _, capped = runner.fit_config(common + ["tracking.max_points_per_curve=100"])
    assert full.losses.shape == (1, 5000) and capped.losses.shape == (1, 101)
    assert list(capped.steps[:3]) == [0, 50, 100] and capped.steps[-1] == 4999
    np.testing.assert_allclose(capped.losses[0], full.losses[0, capped.steps], rtol=1e-6)
    assert capped.final_loss == pytest.approx(float(np.mean(full.losses[0, -500:])), rel=1e-5)
    assert capped.final_loss == pytest.approx(full.final_loss, rel=1e-6)
