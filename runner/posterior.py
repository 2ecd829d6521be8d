"""After a fit: point estimates of the latent sites, MAP assignments of the discrete sites
(`infer_discrete`, seed 000) and posterior predictive draws (`Predictive`, seed 004)."""
from __future__ import annotations

from typing import NamedTuple

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


def model_sites(model, data, inspect=None):
    """name -> site of one trace of the model (discrete sites sampled, not enumerated).
    `inspect(trace, data)` runs inside the trace, where the data are the traced values."""
    import jax
    from numpyro import handlers
    from numpyro.infer import init_to_uniform

    out = {}

    def probe(data):  # traced abstractly when there is data: nothing is computed
        # continuous latent values from init_to_uniform: sites such as ImproperUniform cannot be sampled
        seeded = handlers.substitute(handlers.seed(model, 0), substitute_fn=init_to_uniform)
        with handlers.block():
            out.update(handlers.trace(seeded).get_trace(*(() if data is None else (data,))))
        if inspect is not None:
            inspect(out, data)
        return 0

    jax.eval_shape(probe, data) if data is not None else probe(None)
    return out


def draw_bytes(model, data, sites=None) -> int:
    """Bytes of one draw of the model's sample and deterministic sites (of `sites` only, when
    given), from one abstract trace on `data`: nothing is drawn."""
    sizes: dict = {}

    def inspect(trace, _):
        for name, s in trace.items():
            if s["type"] in ("sample", "deterministic") and (sites is None or name in sites):
                value = s["value"]
                sizes[name] = int(np.prod(np.shape(value), dtype=np.int64)) * np.dtype(getattr(value, "dtype", "f4")).itemsize

    model_sites(model, data, inspect)
    return sum(sizes.values())


class Roles(NamedTuple):
    """The model's sites by role, from one trace (tuples: one Roles is shared by the runs of a model)."""
    latent: tuple  # sampled and not observed, not enumerated (what a guide or a sampler draws)
    deterministic: tuple
    observed: tuple
    enumerated: tuple  # discrete sites marked for parallel enumeration (summed out by the fit)


def roles(model, data) -> Roles:
    """The model's sites by role on this data (one abstract trace), made once per model family,
    settings and the data's tree, shapes and dtypes for runner's models (a run's files ask several
    times)."""
    import jax

    from runner.models.base import Model

    if not isinstance(model, Model):  # a plain function has no settings to tell two apart: traced each time
        return _roles(model, data)
    try:
        leaves, tree = jax.tree.flatten(data)
        shapes = tuple((np.shape(x), str(getattr(x, "dtype", type(x).__name__))) for x in leaves)
    except Exception:  # data jax cannot flatten: traced each time
        return _roles(model, data)
    return model_program(model, ("roles", str(tree), shapes), lambda: _roles(model, data))


def _roles(model, data) -> Roles:
    sites = model_sites(model, data)

    def enumerated(s):
        return (s.get("infer") or {}).get("enumerate") == "parallel"

    samples = {n: s for n, s in sites.items() if s["type"] == "sample"}
    return Roles(latent=tuple(n for n, s in samples.items() if not s["is_observed"] and not enumerated(s)),
                 deterministic=tuple(n for n, s in sites.items() if s["type"] == "deterministic"),
                 observed=tuple(n for n, s in samples.items() if s["is_observed"]),
                 enumerated=tuple(n for n, s in samples.items() if enumerated(s)))


def enumerated_sites(model, data) -> tuple[str, ...]:
    return roles(model, data).enumerated


def plate_depth(sites: dict) -> int:
    """How many plate dimensions the model's sites use (NumPyro's max_plate_nesting): enumeration
    allocates its dimensions to the left of them."""
    return max((-f.dim for s in sites.values() for f in s.get("cond_indep_stack") or []), default=0)


def point_estimate(samples: dict, sites) -> dict:
    """Per-site median of draws (the MAP itself for a Delta guide)."""
    return {n: np.median(np.asarray(samples[n]), axis=0) for n in sites if n in samples}


def latent_sites(model, data) -> tuple[str, ...]:
    return roles(model, data).latent


def assignments(model, latents: dict, data, kept=None) -> dict:
    """MAP values of the enumerated discrete sites for each data point, given the global latents
    (infer_discrete at temperature 0 on the model conditioned on them). `kept`: the experiment's
    kept programs (runner.inference.program_cache), or None."""
    import jax
    from numpyro import handlers

    from runner.inference import program_cache

    traced = model_sites(model, data)
    sites = [n for n, s in traced.items() if s["type"] == "sample" and not s["is_observed"]
             and (s.get("infer") or {}).get("enumerate") == "parallel"]
    if not sites:
        return {}
    first = -plate_depth(traced) - 1

    def build():  # one compiled program: op by op, a first call compiled every small op (~4 s)
        def infer(latents, data):
            # funsor (~0.2 s of import) for the trace only: a kept program is read without it
            from numpyro.contrib.funsor import infer_discrete

            inferred = infer_discrete(handlers.condition(model, data=latents), temperature=0,
                                      first_available_dim=first, rng_key=jax.random.PRNGKey(0))
            tr = handlers.trace(handlers.seed(inferred, 0)).get_trace(data)
            return {n: tr[n]["value"] for n in sites}

        return jax.jit(infer)

    infer = model_program(model, ("assignments", tuple(sites), first), build)
    found = program_cache.run(kept, "assignments", infer, program_cache.on_device(dict(latents)),
                              program_cache.on_device(data))
    return {n: np.asarray(v).astype(int) for n, v in found.items()}


def predictive_draws(model, data, latents: dict, key) -> dict:
    """Posterior predictive draws: `latents` (site -> (draws, ...) of the latent sites, from a
    fitted guide or a posterior), and every other sample site of the model given them (mock
    observations of the data's shape); both are returned."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer import Predictive

    args = () if data is None else (jax.tree.map(jnp.asarray, data),)
    latents = {k: jnp.asarray(v) for k, v in latents.items()}
    pred = Predictive(unobserve(model), posterior_samples=latents, batch_ndims=1)
    return {**{k: np.asarray(v) for k, v in latents.items()},
            **{k: np.asarray(v) for k, v in pred(key, *args).items()}}


def observed_sites(model, data) -> tuple[str, ...]:
    return roles(model, data).observed


def deterministic_sites(model, data) -> tuple[str, ...]:
    return roles(model, data).deterministic


MAX_DETERMINISTIC_DRAWS = 1000


def with_deterministic(model, data, draws: dict, key=None, sites: Roles | None = None) -> dict:
    """`draws` of the latent sites plus the model's deterministic sites computed from them (at
    most MAX_DETERMINISTIC_DRAWS draws, so a large data set is not repeated thousands of times)."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer import Predictive

    sites = sites or roles(model, data)
    names = [n for n in sites.deterministic if n not in draws]
    latent = set(sites.latent)
    if not names or not latent.intersection(draws):
        return dict(draws)
    # cut on the host: a JAX slice of each site is a small program compiled in a fresh process
    latents = {k: jnp.asarray(np.asarray(v)[:MAX_DETERMINISTIC_DRAWS]) for k, v in draws.items() if k in latent}
    args = () if data is None else (jax.tree.map(jnp.asarray, data),)
    pred = Predictive(model, posterior_samples=latents, return_sites=names, batch_ndims=1)
    out = pred(key if key is not None else jax.random.PRNGKey(0), *args)
    return {**draws, **{k: np.asarray(v) for k, v in out.items()}}


def describe(model, data, draws: dict, markov: bool, sites: Roles) -> tuple[dict, dict, dict]:
    """What a fit's draws (site -> (chains, draws, ...)) say: (the summary per latent and
    deterministic site, its posterior/<site>/mean|std metrics, the flat draws with the
    deterministic sites added). Markov chains (NUTS) are summarised by chain (n_eff, r_hat)."""
    flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in draws.items()}
    full = flat if markov else with_deterministic(model, data, flat, sites=sites)
    summary = summarize(draws if markov else full, [*sites.latent, *sites.deterministic], by_chain=markov)
    return summary, summary_metrics(summary), full


SUMMARY_STATS = ("mean", "std", "median", "5.0%", "95.0%")
MAX_METRIC_ELEMENTS = 16  # per site: vector sites log posterior/<site>.<i>/mean for the first ones


def summarize(draws: dict, sites, by_chain: bool = False) -> dict:
    """NumPyro's summary format per site (mean, std, median, 5.0%, 95.0%; with chains also n_eff,
    r_hat): `draws` are (draws, ...) arrays, or (chains, draws, ...) when by_chain."""
    from numpyro.diagnostics import summary

    picked = {n: np.asarray(draws[n], dtype=float) for n in sites if n in draws}
    if not picked:
        return {}
    if not by_chain:  # independent draws (a guide's): no chains to diagnose, the same statistics
        from numpyro.diagnostics import hpdi  # as numpyro's summary: the 90% HPD interval, std with ddof=1

        out = {}
        for n, x in picked.items():
            lo, hi = hpdi(x, 0.9, axis=0)
            out[n] = {"mean": x.mean(0).tolist(), "std": x.std(0, ddof=1).tolist(),
                      "median": np.median(x, axis=0).tolist(), "5.0%": lo.tolist(), "95.0%": hi.tolist()}
        return out
    import warnings

    with warnings.catch_warnings():  # n_eff of draws without spread (a point estimate) divides by 0
        warnings.simplefilter("ignore", RuntimeWarning)
        stats = summary(picked, prob=0.9, group_by_chain=True)
    keep = SUMMARY_STATS + (("n_eff", "r_hat") if by_chain else ())
    return {n: {k: np.asarray(v).tolist() for k, v in st.items() if k in keep} for n, st in stats.items()}


def summary_metrics(summary: dict) -> dict:
    """posterior/<site>/mean and /std (vector sites element-wise, the first MAX_METRIC_ELEMENTS)."""
    out = {}
    for name, st in summary.items():
        mean, std = np.atleast_1d(st["mean"]).ravel(), np.atleast_1d(st["std"]).ravel()
        if np.ndim(st["mean"]) == 0:
            out[f"posterior/{name}/mean"], out[f"posterior/{name}/std"] = float(mean[0]), float(std[0])
            continue
        for i in range(min(mean.size, MAX_METRIC_ELEMENTS)):
            out[f"posterior/{name}.{i}/mean"], out[f"posterior/{name}.{i}/std"] = float(mean[i]), float(std[i])
    return out


def observed_data(model, data) -> dict:
    """observed site -> the data array it observes. One unnamed array is the data of the one
    observed site; named data is matched by identity in a trace (the function passed the
    array itself as `obs=`), else by a unique shape; covariates match no site."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        names = observed_sites(model, data)
        return {names[0]: data} if len(names) == 1 else {}
    import jax

    found: dict = {}
    shapes: dict = {}

    def match(trace, arrays):
        for name, site in trace.items():
            if site["type"] == "sample" and site["is_observed"]:
                same = [k for k, v in arrays.items() if site["value"] is v]
                if same:
                    found[name] = same[0]
                else:
                    shapes[name] = tuple(jax.numpy.shape(site["value"]))

    model_sites(model, data, inspect=match)
    for name, shape in shapes.items():
        match = [k for k, v in data.items() if tuple(np.shape(v)) == shape and k not in found.values()]
        if len(match) == 1:
            found[name] = match[0]
    return {name: data[key] for name, key in found.items()}
