"""runner/inference/budget.py: XLA's plan of a compiled program's memory against what is there."""
import jax
import jax.numpy as jnp
import pytest

import runner
from runner.errors import ConfigError
from runner.inference import budget


def test_the_plan_counts_arguments_outputs_and_temporaries():
    f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum(0))
    compiled = budget.compile_within_budget(f, jax.ShapeDtypeStruct((1000, 1000), jnp.float32))
    need = budget.needed_bytes(compiled)
    assert 4_004_000 <= need < 20_000_000  # the 4 MB argument and the 4 KB output, at least
    assert float(compiled(jnp.ones((1000, 1000)))[0]) == pytest.approx(1000.0)  # the compiled program runs


def test_over_budget_is_one_line():
    f = jax.jit(lambda x: (x @ x.T).sum())
    with pytest.raises(ConfigError, match=r"^the fit needs 0\.0 GB of memory, 0\.0 GB is available: fewer restarts$"):
        budget.compile_within_budget(f, jax.ShapeDtypeStruct((1000, 1000), jnp.float32), hint="fewer restarts",
                                     available=1_000_000)


def test_the_host_says_what_is_available():
    have = budget.available_bytes()
    assert have is not None and have > 2**28  # this machine has GBs free


def test_a_fit_larger_than_the_machine_is_refused_before_it_runs():
    """bmm on MNIST-5k with 100000 restarts plans about 127 GB: refused in one line after the
    compile, before anything is allocated (prepare is only shape-evaluated)."""
    cfg, _ = runner.compose(["model=bmm", "data=mnist_sample", "data.binarize=0.5", "restarts=100000", "steps=5",
                             "tracking=none"])
    with pytest.raises(ConfigError, match=r"^the fit needs (\d+\.\d) GB of memory, (\d+\.\d) GB is available: "
                                          r"fewer restarts, data.batch_size=<rows> \(minibatches\), or less data"):
        runner.fit(runner.build(cfg))
