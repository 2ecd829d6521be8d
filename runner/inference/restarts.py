"""Restarts as a leading array axis: spread over the devices, and the best one picked inside the
compiled program (SVI and EM share these)."""
from __future__ import annotations

import numpy as np


def nan_argmin(x):
    """argmin over the last axis, NaN counted as +inf."""
    import jax.numpy as jnp

    return jnp.argmin(jnp.where(jnp.isnan(x), jnp.inf, x), axis=-1)


def shard_restarts(x):
    """Spread the restart axis over every visible device (GPUs, or host devices forced with
    XLA_FLAGS=--xla_force_host_platform_device_count=N); a no-op on one device or when the
    restarts do not divide evenly."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.devices()
    if len(devices) == 1 or x.shape[0] % len(devices):
        return x
    mesh = Mesh(np.array(devices), ("restarts",))
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec("restarts")))


def root_keys(seeds: list[int]):
    """[PRNGKey(s) for s in seeds], stacked: the same keys (seeds are below 2**32, runner.schema).
    With JAX's default PRNG (threefry2x32, raw uint32 keys) PRNGKey(s) is the pair (s >> 32,
    s & 0xFFFFFFFF), here (0, s), made on the host; with another, one compiled program (~8 ms
    in a fresh process, instead of ~18 ms of one small program per operation of PRNGKey)."""
    import jax

    seeds = np.asarray(seeds, dtype=np.uint32)
    if _raw_threefry():
        return jax.device_put(np.stack([np.zeros_like(seeds), seeds], axis=-1))
    return jax.jit(jax.vmap(jax.random.PRNGKey))(seeds)


def root_key(seed: int):
    """PRNGKey(seed) (below 2**32), made as root_keys makes each of its keys (EM's one key: indexing
    root_keys' array would be a small program of its own)."""
    import jax

    if _raw_threefry():
        return jax.device_put(np.array([0, seed], dtype=np.uint32))
    return jax.random.PRNGKey(seed)


def _raw_threefry() -> bool:
    import jax

    return jax.config.jax_default_prng_impl == "threefry2x32" and not jax.config.jax_enable_custom_prng
