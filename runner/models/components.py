"""The observation of a mixture given its component index, with the log-likelihood of every
point under every component computed as matrix products: an (N, K) table, never the (K, N, D)
tensor that `Normal(locs[assignment], scale).to_event(1)` builds when the assignment is
enumerated (K = 20 components of 60000 MNIST images: 0.9 G floats against 1.2 M).

`index` is the component of each point: an (N,) array when sampled, or an enumerated value of
shape (K, 1) under TraceEnum_ELBO, infer_discrete and collapsed NUTS; `log_prob(x)` of the (N, D)
data then gives the (K, N) table those need, by gathering from the (N, K) one.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from numpyro.distributions import Distribution, constraints


def gather(table, index):
    """table (..., N, K), index broadcastable to (..., N): table[n, index[n]] for every n."""
    n = table.shape[-2]
    return table[..., jnp.arange(n), index]


def diag_normal_table(x, locs, scale):
    """(N, K): log N(x_n | locs_k, diag(scale^2)) for (N, D) x, (K, D) locs, scale () or (D,)."""
    prec = jnp.broadcast_to(1.0 / jnp.square(scale), locs.shape[-1:])  # (D,)
    quad = (jnp.square(x) @ prec)[..., None] - 2 * x @ (locs * prec).T + (jnp.square(locs) @ prec)[None]
    log_norm = -0.5 * locs.shape[-1] * jnp.log(2 * jnp.pi) - jnp.sum(jnp.broadcast_to(jnp.log(scale), prec.shape))
    return log_norm - 0.5 * quad


def bernoulli_table(x, probs):
    """(N, K): log prod_d Bernoulli(x_nd | probs_kd) for (N, D) binary x, (K, D) probs."""
    return x @ jnp.log(probs).T + (1 - x) @ jnp.log1p(-probs).T


class DiagNormalComponents(Distribution):
    """x | index ~ Normal(locs[index], scale), independent over the D coordinates."""
    arg_constraints = {"locs": constraints.real_vector, "scale": constraints.positive}
    support = constraints.real_vector
    reparametrized_params = ["locs", "scale"]

    def __init__(self, locs, scale, index, *, validate_args=None):
        self.locs, self.scale, self.index = locs, jnp.asarray(scale), index
        super().__init__(batch_shape=jnp.shape(index), event_shape=locs.shape[-1:], validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        shape = sample_shape + self.batch_shape + self.event_shape
        return self.locs[self.index] + self.scale * jax.random.normal(key, shape)

    def log_prob(self, value):
        return gather(diag_normal_table(value, self.locs, self.scale), self.index)


class BernoulliComponents(Distribution):
    """x | index ~ Bernoulli(probs[index]), independent over the D pixels."""
    arg_constraints = {"probs": constraints.independent(constraints.unit_interval, 1)}
    support = constraints.independent(constraints.boolean, 1)

    def __init__(self, probs, index, *, validate_args=None):
        self.probs, self.index = probs, index
        super().__init__(batch_shape=jnp.shape(index), event_shape=probs.shape[-1:], validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        shape = sample_shape + self.batch_shape + self.event_shape
        return jax.random.bernoulli(key, self.probs[self.index], shape).astype(jnp.result_type(float))

    def log_prob(self, value):
        return gather(bernoulli_table(value, self.probs), self.index)
