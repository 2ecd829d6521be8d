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
    """[PRNGKey(s) for s in seeds], stacked, from one compiled program: the same keys (seeds are
    below 2**32, runner.schema), made in ~8 ms instead of ~18 ms of one small program per
    operation of PRNGKey (each traced and dispatched on its own, out of a jit)."""
    import jax

    return jax.jit(jax.vmap(jax.random.PRNGKey))(np.asarray(seeds, dtype=np.uint32))
