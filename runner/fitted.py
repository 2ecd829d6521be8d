"""Predictions from a logged fit, read back: the fit's files (config.yaml checked by
runner.trust, latents.json, params.json, posterior.npz, constants.json, sites.json) -> the
model and its posterior -> assignments or posterior predictive draws for new data. Used by
`python -m runner.predict` (runner/predict.py) and the pyfunc model (runner/tracking/mlflow/pyfunc.py);
it reads no store itself.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

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


def load_fitted(files: dict, method: str, roots=None) -> Fitted:
    """`files`: artifact name -> local path (config.yaml required). The stored config is checked
    whole (runner.trust) before anything in it is instantiated; `roots`: the trusted packages,
    default trusted_roots() (runner, Hydra plugin packages, $RUNNER_TRUST)."""
    from omegaconf import OmegaConf

    from runner.checks import instantiate
    from runner.trust import check_stored_config, trusted_roots

    if "config.yaml" not in files:
        raise ConfigError("no config.yaml artifact: not a runner run")
    try:
        cfg = OmegaConf.load(files["config.yaml"])
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"config.yaml cannot be read: {first}") from None
    check_stored_config(cfg, trusted_roots() if roots is None else roots)

    def read_json(name):
        return json.loads(Path(files[name]).read_text()) if name in files else None

    draws = dict(np.load(files["posterior.npz"], allow_pickle=False)) if "posterior.npz" in files else None
    return Fitted(model=instantiate(cfg.model, "model"), method=method, latents=read_json("latents.json"),
                  params=read_json("params.json"), draws=draws, cfg=cfg, constants=read_json("constants.json"),
                  sites=read_json("sites.json"))


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
        return "assignments", out
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
    return "draws", {name: np.asarray(pred[name]) for name in observed if name in pred}


def data_size(data) -> int:
    if data is None:
        return 0
    if isinstance(data, dict):
        arrays = [v for v in data.values() if np.ndim(v) > 0]
        return int(np.shape(arrays[0])[0]) if arrays else 0
    return int(np.shape(data)[0])
