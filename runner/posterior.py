"""After a fit: point estimates of the latent sites, MAP assignments of the discrete sites
(`infer_discrete`, seed 000) and posterior predictive draws (`Predictive`, seed 004)."""
from __future__ import annotations

import numpy as np
from numpyro.primitives import Messenger


class unobserve(Messenger):
    """Turn observed sample sites into latent ones, so that `Predictive` draws mock observations
    of the data's shape (the models take `data` for its shape as well as its values)."""

    def process_message(self, msg):
        if msg["type"] == "sample" and msg["is_observed"]:
            msg["value"], msg["is_observed"] = None, False


_PROGRAMS: dict = {}


def model_program(model, name, build):
    """`build()` (a jitted function of `model`), made once per model family, settings and `name`:
    the jobs of a sweep build equal models and then share one trace and one compile. Models whose
    settings are not hashable get a fresh one each time."""
    try:
        key = (type(model), tuple(sorted(vars(model).items())), name)
        hash(key)
    except TypeError:
        return build()
    if key not in _PROGRAMS:
        _PROGRAMS[key] = build()
    return _PROGRAMS[key]


def model_sites(model, data):
    """name -> site of one trace of the model (discrete sites sampled, not enumerated)."""
    import jax
    from numpyro import handlers

    out = {}

    def probe(data):  # traced abstractly when there is data: nothing is computed
        with handlers.block():
            out.update(handlers.trace(handlers.seed(model, 0)).get_trace(*(() if data is None else (data,))))
        return 0

    jax.eval_shape(probe, data) if data is not None else probe(None)
    return out


def enumerated_sites(model, data) -> list[str]:
    return [n for n, s in model_sites(model, data).items()
            if s["type"] == "sample" and (s.get("infer") or {}).get("enumerate") == "parallel"]


def point_estimate(samples: dict, sites) -> dict:
    """Per-site median of draws (the MAP itself for a Delta guide)."""
    return {n: np.median(np.asarray(samples[n]), axis=0) for n in sites if n in samples}


def latent_sites(model, data) -> list[str]:
    return [n for n, s in model_sites(model, data).items()
            if s["type"] == "sample" and not s["is_observed"]
            and (s.get("infer") or {}).get("enumerate") != "parallel"]


def assignments(model, latents: dict, data, key=None) -> dict:
    """MAP values of the enumerated discrete sites for each data point, given the global latents
    (infer_discrete at temperature 0 on the model conditioned on them)."""
    import jax
    import jax.numpy as jnp
    from numpyro import handlers
    from numpyro.contrib.funsor import infer_discrete

    sites = enumerated_sites(model, data)
    if not sites:
        return {}
    key = key if key is not None else jax.random.PRNGKey(0)

    def build():  # one compiled program: op by op, a first call compiled every small op (~4 s)
        def infer(latents, data, key):
            inferred = infer_discrete(handlers.condition(model, data=latents), temperature=0,
                                      first_available_dim=-2, rng_key=key)
            tr = handlers.trace(handlers.seed(inferred, 0)).get_trace(data)
            return {n: tr[n]["value"] for n in sites}

        return jax.jit(infer)

    infer = model_program(model, ("assignments", tuple(sites)), build)
    found = infer({k: jnp.asarray(v) for k, v in latents.items()}, jnp.asarray(data), key)
    return {n: np.asarray(v).astype(int) for n, v in found.items()}


def predictive_draws(model, data, num: int, key, guide=None, params=None, posterior=None) -> dict:
    """`num` posterior predictive draws of every sample site (latents and mock observations of
    the data's shape), from a fitted guide (SVI) or from posterior samples (NUTS)."""
    from numpyro.infer import Predictive

    import jax
    import jax.numpy as jnp

    args = () if data is None else (jnp.asarray(data),)
    params = None if params is None else {k: jnp.asarray(v) for k, v in params.items()}
    k_guide, k_model = jax.random.split(key)
    if posterior is not None:
        posterior = {k: jnp.asarray(v)[:num] for k, v in posterior.items()}
    else:  # the guide's draws of the latents, then the model given them (both are returned)
        posterior = Predictive(guide, params=params, num_samples=num)(k_guide, *args)
    pred = Predictive(unobserve(model), posterior_samples=posterior, batch_ndims=1)
    return {**{k: np.asarray(v) for k, v in posterior.items()},
            **{k: np.asarray(v) for k, v in pred(k_model, *args).items()}}


def observed_sites(model, data) -> list[str]:
    return [n for n, s in model_sites(model, data).items() if s["type"] == "sample" and s["is_observed"]]
