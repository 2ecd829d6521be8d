"""`python -m runner.predict run_id=<id> [data=...] [data.path=...]`: predictions for new data
from a logged run, without refitting.

The run's config (config.yaml) and fit (latents.json: the point estimate of the global latent
sites; params.json for EM; posterior.npz when it has one) are read back from the store. For
models with discrete sites (mixtures) it prints and writes each point's MAP assignment (and the
assignment probabilities for mixture families); for the others, posterior predictive draws of
the observations for the new data.

Options (key=value, Hydra style): run_id (required), tracking.uri (default sqlite:///mlflow.db),
data / data.* (the new data, as for `python -m runner`; default: the run's own data),
samples (posterior predictive draws, default 100), out (default predictions.json).
"""
from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runner.errors import ConfigError

ARTIFACTS = ("config.yaml", "latents.json", "params.json", "posterior.npz")


def parse(argv: list[str]) -> dict:
    opts = {"tracking.uri": "sqlite:///mlflow.db", "samples": "100", "out": "predictions.json"}
    data = []
    for arg in argv:
        if "=" not in arg:
            raise ConfigError(f"arguments are key=value (run_id=..., data=...), got {arg!r}")
        key, value = arg.split("=", 1)
        if key == "data" or key.startswith("data."):
            data.append(arg)
        elif key in ("run_id", "tracking.uri", "samples", "out"):
            opts[key] = value
        else:
            raise ConfigError(f"unknown option {key!r}: use run_id, data=..., data.*, tracking.uri, samples, out")
    if "run_id" not in opts:
        raise ConfigError("run_id=<id> is required (see `python -m runner.compare` for run ids)")
    opts["data"] = data
    return opts


def new_data(cfg, tags: dict, overrides: list[str]):
    """The run's data config with the data overrides applied, composed as the CLI does."""
    from omegaconf import OmegaConf

    from runner.api import compose
    from runner.build import _instantiate, check_targets

    node = cfg.data
    group = [o for o in overrides if o.startswith("data=")]
    if group or (overrides and tags.get("data")):  # compose from the new (or the run's) data choice
        base = [] if group else [f"data={tags['data']}"]
        composed, _ = compose([f"model={tags.get('model', 'gmm')}", *base, *overrides])
        node = composed.data
    elif overrides:  # no choice recorded: apply the keys to the run's own node
        node = OmegaConf.merge(cfg.data, OmegaConf.from_dotlist([o[len("data."):] for o in overrides]))
    check_targets(node, "data")
    return _instantiate(node, "data") if node else None


@dataclass
class Fitted:
    """A logged fit, read back: the model and what the fit left (any of them may be None)."""
    model: object
    method: str  # svi | em | nuts
    latents: dict | None  # latents.json: the point estimate of the global latent sites
    params: dict | None  # params.json (EM's are the updates' own parameters)
    draws: dict | None  # posterior.npz
    cfg: object = None


def load_fitted(files: dict, method: str) -> Fitted:
    """`files`: artifact name -> local path (config.yaml required)."""
    from omegaconf import OmegaConf

    from runner.build import _instantiate, check_targets

    if "config.yaml" not in files:
        raise ConfigError("no config.yaml artifact: not a runner run")
    cfg = OmegaConf.load(files["config.yaml"])
    check_targets(cfg.model, "model")

    def read_json(name):
        return json.loads(Path(files[name]).read_text()) if name in files else None

    draws = dict(np.load(files["posterior.npz"], allow_pickle=False)) if "posterior.npz" in files else None
    return Fitted(model=_instantiate(cfg.model, "model"), method=method, latents=read_json("latents.json"),
                  params=read_json("params.json"), draws=draws, cfg=cfg)


def predict_data(fitted: Fitted, data, samples: int = 100, seed: int = 0) -> tuple[str, dict]:
    """Mixtures: ("assignments", {site: MAP assignment per point, site_probs: (n, K) for mixture
    families}); other models: ("draws", {observed site: posterior predictive draws, (samples, ...)}).
    Named data (a function model) may leave the observed arrays out: the model draws them."""
    import jax
    import jax.numpy as jnp

    from runner import posterior

    model, method = fitted.model, fitted.method
    data = model.bind(data)
    out: dict = {}
    enumerated = posterior.enumerated_sites(model, data)
    if enumerated:
        site = enumerated[0]
        if model.has_em:
            from runner.em import compiled_e_step

            fit = fitted.params if method == "em" else fitted.latents
            _, resp = compiled_e_step(model, from_latents=method != "em")(
                {k: jnp.asarray(v) for k, v in fit.items()}, jax.tree.map(jnp.asarray, data))
            out[f"{site}_probs"] = np.asarray(resp)
        if method == "em":
            out[site] = np.asarray(resp).argmax(-1)
        else:
            out[site] = np.asarray(posterior.assignments(model, fitted.latents, data)[site])
        return "assignments", out
    fit_latents = list(fitted.latents or {})  # the fit's global latent sites
    draws = fitted.draws
    if draws is not None and fit_latents and all(n in draws for n in fit_latents):
        source = {n: draws[n] for n in fit_latents}
    else:  # the point estimate, repeated
        source = {n: np.repeat(np.asarray(fitted.latents[n])[None], samples, axis=0) for n in fit_latents}
    pred = posterior.predictive_draws(model, data, samples, jax.random.PRNGKey(seed), posterior=source)
    sites = posterior.model_sites(model, data)
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


def predict(opts: dict) -> dict:
    from runner.tracking import fetch_run

    with tempfile.TemporaryDirectory() as tmp:
        try:
            tags = fetch_run(opts["tracking.uri"], opts["run_id"], Path(tmp), ARTIFACTS)
        except LookupError as e:
            raise ConfigError(str(e)) from None
        try:
            fitted = load_fitted({p.name: p for p in Path(tmp).iterdir()}, tags.get("inference", "svi"))
        except ConfigError as e:
            raise ConfigError(f"run {opts['run_id']}: {e}") from None
    data = new_data(fitted.cfg, tags, opts["data"])
    out: dict = {"run_id": opts["run_id"], "inference": fitted.method, "n": data_size(data)}
    try:
        num = int(opts["samples"])
    except ValueError:
        raise ConfigError(f"samples must be an integer, got {opts['samples']!r}") from None
    kind, found = predict_data(fitted, data, num)
    for name, value in found.items():
        if kind == "assignments":  # and their probabilities
            out[name] = value.tolist()
        else:  # posterior predictive draws: their mean and spread per observation
            x = value.astype(float)
            out[name] = {"mean": x.mean(0).tolist(), "std": x.std(0).tolist(), "draws": len(x)}
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    try:
        opts = parse(argv)
        out = predict(opts)
    except ConfigError as e:
        print(f"runner.predict: error: {e}", file=sys.stderr)
        return 2
    Path(opts["out"]).write_text(json.dumps(out))
    shown = {k: v for k, v in out.items() if not k.endswith("_probs")}
    text = json.dumps(shown)
    print(text if len(text) < 2000 else text[:2000] + " ...")
    print(f"runner.predict: wrote {opts['out']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
