"""Predictions from a logged fit, read back: the fit's files (config.yaml checked by
runner.trust, latents.json, params.json, posterior.npz, constants.json, sites.json) -> the
model and its posterior -> assignments or posterior predictive draws for new data. Used by
`python -m runner.predict` (runner/predict.py) and the pyfunc model (runner/tracking/mlflow/pyfunc.py);
it reads no store itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runner.errors import ConfigError


@dataclass
class Fitted:
    """A logged fit, read back: the model and what the fit left (any of them may be None)."""
    model: object
    method: str  # svi | em | nuts
    latents: dict | None  # latents.json: the point estimate of the global latent sites
    params: dict | None  # params.json (EM's are the updates' own parameters)
    draws: dict | None  # posterior.npz
    cfg: object = None
    constants: dict | None = None  # constants.json: a function model's scalar data (sizes such as J)
    sites: dict | None = None  # sites.json: the fit's observed and enumerated sites
    source: str = ""  # "run <id>": whose files these are, in the line that refuses one


def load_fitted(files: dict, method: str, roots=None, source: str = "") -> Fitted:
    """`files`: artifact name -> local path (config.yaml required). The stored config is checked
    whole (runner.trust) before anything in it is instantiated; `roots`: the trusted packages,
    default trusted_roots() (runner, Hydra plugin packages, $RUNNER_TRUST). The fit's files are
    read as untrusted data (runner.readback: their form; `check_fit`, given the data: their
    meaning); `source` ("run <id>") starts each line that refuses one."""
    from omegaconf import OmegaConf

    from runner.checks import instantiate
    from runner.trust import check_stored_config, trusted_roots

    def where(name: str) -> str:
        return f"{source}: {name}" if source else name

    if "config.yaml" not in files:
        raise ConfigError(f"{source + ': ' if source else ''}no config.yaml artifact: not a runner run")
    try:
        cfg = OmegaConf.load(files["config.yaml"])
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"{where('config.yaml')} cannot be read: {first}") from None
    try:
        check_stored_config(cfg, trusted_roots() if roots is None else roots)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}" if source else str(e)) from None
    found = read_fit_files(files, where)
    return Fitted(model=instantiate(cfg.model, "model"), method=method, cfg=cfg, source=source, **found)


def read_fit_files(files: dict, where) -> dict:
    """latents.json, params.json, posterior.npz, constants.json and sites.json (those there),
    each checked for its form: Fitted's fields."""
    from runner.readback import load_json, load_npz, number_tree

    def read_json(name):
        return load_json(files[name], where(name)) if name in files else None

    latents, params = read_json("latents.json"), read_json("params.json")
    sites, constants = read_json("sites.json"), read_json("constants.json")
    for name, value in (("sites.json", sites), ("constants.json", constants)):
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"{where(name)} is not a JSON object")
    draws = load_npz(files["posterior.npz"], where("posterior.npz")) if "posterior.npz" in files else None
    if draws is not None:
        lengths = {int(v.shape[0]) if v.ndim else 0 for v in draws.values()}
        if not draws or len(lengths) != 1 or 0 in lengths:
            raise ConfigError(f"{where('posterior.npz')} does not hold the same number (at least 1) of draws of "
                              f"each site: {', '.join(f'{k} {v.shape}' for k, v in draws.items()) or 'no arrays'}")
    return {"latents": None if latents is None else number_tree(latents, where("latents.json")),
            "params": None if params is None else number_tree(params, where("params.json")),
            "draws": draws, "constants": constants, "sites": sites}


def check_point_shapes(fitted: dict | None, data) -> None:
    """New data's points must have the shape the run was fitted on (64 pixels, 3 columns, ...)."""
    from runner.errors import ConfigError
    from runner.outputs import point_shapes

    if not fitted or data is None:
        return
    new = point_shapes(data)
    for name, shape in fitted.items():
        if name in new and list(new[name]) != list(shape):
            what = f"data '{name}'" if name else "the new data"
            raise ConfigError(f"{what} has points of shape {tuple(new[name])}, the run was fitted on points of "
                              f"shape {tuple(shape)}: give data with {int(np.prod(shape))} value(s) per point")


def latent_facts(model, data) -> dict:
    """name -> (support, shape of one value) of the model's latent sample sites (not observed,
    not enumerated), from one abstract trace on `data` (bound)."""
    from runner import posterior

    facts: dict = {}

    def inspect(trace, _):
        for name, s in trace.items():
            if (s["type"] == "sample" and not s["is_observed"]
                    and (s.get("infer") or {}).get("enumerate") != "parallel"):
                facts[name] = (getattr(s["fn"], "support", None), tuple(np.shape(s["value"])))

    posterior.model_sites(model, data, inspect)
    return facts


def outside_support(support, value) -> int | None:
    """How many of `value`'s events (the last axes, as the support counts them) are outside
    `support` (numpyro's constraint check); None where the support cannot be checked here (one
    that depends on the data, or that has no check)."""
    import jax.numpy as jnp

    try:
        ok = np.asarray(support.check(jnp.asarray(value)))
    except Exception:  # constraints.dependent, a bound that is a traced value of the data
        return None
    return int(ok.size - ok.sum())


def check_values(fitted: Fitted, facts: dict, name: str, value, draws: bool) -> None:
    """One latent site's value (latents.json) or draws (posterior.npz, `draws`): the site's shape,
    inside its support."""
    file = "posterior.npz" if draws else "latents.json"
    where = f"{fitted.source}: {file}" if fitted.source else file
    model = getattr(fitted.model, "name", type(fitted.model).__name__)
    if name not in facts:
        raise ConfigError(f"{where} names '{name}', not a latent site of model '{model}': not this model's fit")
    support, shape = facts[name]
    got = tuple(np.shape(value))[1:] if draws else tuple(np.shape(value))
    if got != shape:
        raise ConfigError(f"{where}: '{name}' has shape {got}{' per draw' if draws else ''}, the model's site "
                          f"has shape {shape}: not this model's fit")
    bad = None if support is None else outside_support(support, value)
    if bad:
        raise ConfigError(f"{where}: '{name}' is outside the site's support ({support}) at {bad} "
                          f"{'draw(s)' if draws else 'value(s)'}: it cannot be predicted from")


def check_em_params(fitted: Fitted, data) -> None:
    """EM's own parameters (params.json) have the names and shapes of the model's EM updates."""
    import jax

    from runner.models import mixtures

    model = fitted.model
    try:
        want = jax.eval_shape(lambda key, d: model.em_init(key, mixtures.em_data(model, d), 1e-6),
                              jax.random.PRNGKey(0), data)
    except Exception:  # a user's EM extras that cannot be traced abstractly: checked when they run
        return
    where = f"{fitted.source}: params.json" if fitted.source else "params.json"
    got = {k: tuple(np.shape(v)) for k, v in (fitted.params or {}).items()}
    need = {k: tuple(v.shape) for k, v in want.items()}
    if got != need:
        raise ConfigError(f"{where} holds {got}, EM's parameters of this model are {need}: not this model's fit")


def check_fit(fitted: Fitted, data) -> None:
    """The fit's files, read back, against the model on `data` (bound): latents.json and the
    draws predictions use (posterior.npz) of the model's latent sites, with their shapes and
    inside their supports; EM's params.json with its parameters' shapes."""
    if fitted.latents is None:
        if fitted.params is not None and getattr(fitted.model, "em_init", None) is not None:
            check_em_params(fitted, data)
        return
    observed = set((fitted.sites or {}).get("observed") or ())  # latent here when the new data leave them out
    facts = {k: v for k, v in latent_facts(fitted.model, data).items() if k not in observed}
    for name, value in fitted.latents.items():
        check_values(fitted, facts, name, value, draws=False)
    for name, value in (fitted.draws or {}).items():
        if name in fitted.latents:  # the draws predictions use (not an observed or local site's)
            check_values(fitted, facts, name, value, draws=True)


def finite_out(fitted: Fitted, found: dict) -> dict:
    """What is predicted, refused where it is NaN or inf (values the fit's files allowed but the
    model cannot use): NaN never predicts."""
    for name, value in found.items():
        array = np.asarray(value)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            files = "params.json" if fitted.latents is None else "latents.json / posterior.npz"
            raise ConfigError(f"{fitted.source + ': ' if fitted.source else ''}the predictions of '{name}' are NaN "
                              f"or inf: the fit's {files} hold values the model cannot use")
    return found


def predict_data(fitted: Fitted, data, samples: int = 100, seed: int = 0) -> tuple[str, dict]:
    """Mixtures: ("assignments", {site: MAP assignment per point, site_probs: (n, K) for mixture
    families}); other models: ("draws", {observed site: posterior predictive draws, (samples, ...)}).
    Named data (a function model) may leave the observed arrays out: the model draws them."""
    import jax
    import jax.numpy as jnp

    from runner import posterior

    model = fitted.model
    if fitted.constants and (data is None or isinstance(data, dict)):  # sizes the new data does not give
        data = {**fitted.constants, **(data or {})}
    fit_observed = (fitted.sites or {}).get("observed")
    data = model.bind(data, observed=fit_observed or (), fitting=False)
    check_point_shapes((fitted.sites or {}).get("point_shapes"), data)
    check_fit(fitted, data)
    out: dict = {}
    enumerated = [s for s in posterior.enumerated_sites(model, data) if s not in (fit_observed or ())]
    if enumerated:
        site = enumerated[0]
        from runner.models import mixtures

        own = fitted.latents is None  # the method's own parameters (EM's params.json), not the model's sites
        if mixtures.supports(model):
            fit = fitted.params if own else fitted.latents
            _, resp = mixtures.compiled_e_step(model, from_latents=not own)(
                {k: jnp.asarray(v) for k, v in fit.items()}, jax.tree.map(jnp.asarray, data))
            out[f"{site}_probs"] = np.asarray(resp)
        if own:
            out[site] = np.asarray(resp).argmax(-1)
        else:
            out[site] = np.asarray(posterior.assignments(model, fitted.latents, data)[site])
        return "assignments", finite_out(fitted, out)
    fit_latents = list(fitted.latents or {})  # the fit's global latent sites
    draws = fitted.draws
    if draws is not None and fit_latents and all(n in draws for n in fit_latents):
        take = np.arange(samples) % len(draws[fit_latents[0]])  # cycled when fewer were stored
        source = {n: np.asarray(draws[n])[take] for n in fit_latents}
    else:  # the point estimate, repeated
        source = {n: np.repeat(np.asarray(fitted.latents[n])[None], samples, axis=0) for n in fit_latents}
    _, k_model = jax.random.split(jax.random.PRNGKey(seed))
    pred = posterior.predictive_draws(model, data, source, k_model)
    sites = posterior.model_sites(model, data)
    if fit_observed is not None:  # what the fit observed is what is predicted
        observed = [n for n in fit_observed if n in sites]
    else:  # a run logged before sites.json
        observed = [n for n, s in sites.items() if s["type"] == "sample" and n not in source
                    and (s["is_observed"] or not (s.get("infer") or {}).get("enumerate"))]
    return "draws", finite_out(fitted, {name: np.asarray(pred[name]) for name in observed if name in pred})


def data_size(data) -> int:
    if data is None:
        return 0
    if isinstance(data, dict):
        arrays = [v for v in data.values() if np.ndim(v) > 0]
        return int(np.shape(arrays[0])[0]) if arrays else 0
    return int(np.shape(data)[0])
