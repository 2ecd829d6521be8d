"""The restarts' root keys (runner.inference.restarts.root_keys): the keys jax.random.PRNGKey makes
for each seed, made on the host for JAX's default PRNG and by one program for another."""
import jax
import numpy as np
import pytest

from runner.inference.restarts import root_key, root_keys

SEEDS = [0, 1, 7, 2**31 - 1, 2**31, 2**32 - 1]


@pytest.mark.parametrize("x64", [False, True])
@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
def test_root_keys_are_prngkeys_of_the_seeds(x64, impl):
    was = jax.config.jax_enable_x64, jax.config.jax_default_prng_impl
    jax.config.update("jax_enable_x64", x64)
    jax.config.update("jax_default_prng_impl", impl)
    try:
        keys = root_keys(SEEDS)
        expected = np.stack([np.asarray(jax.random.PRNGKey(s)) for s in SEEDS])
        assert keys.dtype == expected.dtype == np.uint32 and keys.shape == expected.shape
        np.testing.assert_array_equal(np.asarray(keys), expected)
        # what a fit does with them: the same draws
        draw = jax.vmap(lambda k: jax.random.normal(k, (3,)))
        np.testing.assert_array_equal(np.asarray(draw(keys)), np.asarray(draw(jax.numpy.asarray(expected))))
    finally:
        jax.config.update("jax_enable_x64", was[0])
        jax.config.update("jax_default_prng_impl", was[1])


@pytest.mark.parametrize("x64", [False, True])
@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
def test_root_key_is_the_prngkey_of_its_seed(x64, impl):
    was = jax.config.jax_enable_x64, jax.config.jax_default_prng_impl
    jax.config.update("jax_enable_x64", x64)
    jax.config.update("jax_default_prng_impl", impl)
    try:
        for s in SEEDS:
            key, expected = root_key(s), jax.random.PRNGKey(s)
            assert key.dtype == expected.dtype and key.shape == expected.shape and not key.weak_type
            np.testing.assert_array_equal(np.asarray(key), np.asarray(expected))
    finally:
        jax.config.update("jax_enable_x64", was[0])
        jax.config.update("jax_default_prng_impl", was[1])
