"""The restarts' root keys (runner.inference.restarts.root_keys): the keys jax.random.PRNGKey makes
for each seed, made on the host for JAX's default PRNG and by one program for another."""
import jax
import numpy as np
import pytest

from runner.inference.restarts import root_key, root_keys

SEEDS = [0, 1, 7, 2**31 - 1, 2**31, 2**32 - 1]


@pytest.fixture(params=[(x64, impl) for impl in ("threefry2x32", "rbg") for x64 in (False, True)],
                ids=lambda p: f"{p[1]}-x64={p[0]}")
def prng(request):
    """JAX's x64 setting and default PRNG set for the test, and restored after it."""
    was = jax.config.jax_enable_x64, jax.config.jax_default_prng_impl
    jax.config.update("jax_enable_x64", request.param[0])
    jax.config.update("jax_default_prng_impl", request.param[1])
    yield request.param
    jax.config.update("jax_enable_x64", was[0])
    jax.config.update("jax_default_prng_impl", was[1])


def test_root_keys_are_prngkeys_of_the_seeds(prng):
    keys = root_keys(SEEDS)
    expected = np.stack([np.asarray(jax.random.PRNGKey(s)) for s in SEEDS])
    assert keys.dtype == expected.dtype == np.uint32 and keys.shape == expected.shape
    np.testing.assert_array_equal(np.asarray(keys), expected)
    # what a fit does with them: the same draws
    draw = jax.vmap(lambda k: jax.random.normal(k, (3,)))
    np.testing.assert_array_equal(np.asarray(draw(keys)), np.asarray(draw(jax.numpy.asarray(expected))))


def test_root_key_is_the_prngkey_of_its_seed(prng):
    for s in SEEDS:
        key, expected = root_key(s), jax.random.PRNGKey(s)
        assert key.dtype == expected.dtype and key.shape == expected.shape and not key.weak_type
        np.testing.assert_array_equal(np.asarray(key), np.asarray(expected))
