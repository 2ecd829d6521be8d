"""The run directory's writers: every file a run leaves, written before anything is logged, so a
tracking failure loses no fit. Plain data in, files out; no MLflow, no Hydra."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def to_lists(tree):
    """JSON-ready: arrays as nested lists (a param may itself be a pytree: a flow's weights)."""
    import jax

    return {k: jax.tree.map(lambda x: np.asarray(x).tolist(), v) for k, v in tree.items()}


def write_json(path: Path, obj) -> str:
    """`obj` as JSON at `path`; returns the file's name (the artifact path when path is in the run dir)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))
    return path.name


def write_config(run_dir: Path, config_yaml: str) -> str:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config_yaml)
    return "config.yaml"


def write_metrics(run_dir: Path, scalars: dict, curves: dict, steps: list | None = None) -> str:
    """metrics.json: every scalar and every curve as the fit kept it; `steps`: the step of each
    curve point (absent: point i is step i)."""
    return write_json(run_dir / "metrics.json", {"scalars": scalars, "curves": curves,
                                                  **({"steps": steps} if steps is not None else {})})


MAX_DRAW_BYTES = 16 * 2**20  # posterior.npz of the guide's draws: thinned to stay below this
MIN_DRAWS = 100


def write_guide_draws(samples: dict, sites, run_dir: Path) -> list[str]:
    """posterior.npz: the fitted guide's draws of the latent sites, so that predictions are
    posterior predictive (runner.predict, the pyfunc model). Skipped for a point estimate (every
    draw the same) and where even MIN_DRAWS would not fit MAX_DRAW_BYTES (images x components)."""
    draws = {n: np.asarray(samples[n]) for n in sites if n in samples}
    if not draws or all(np.ptp(v, axis=0).max(initial=0) == 0 for v in draws.values()):
        return []
    per_draw = sum(v[0].nbytes for v in draws.values())
    keep = min(len(next(iter(draws.values()))), MAX_DRAW_BYTES // max(per_draw, 1))
    if keep < MIN_DRAWS:
        return []
    np.savez_compressed(run_dir / "posterior.npz", **{n: v[:keep] for n, v in draws.items()})
    return ["posterior.npz"]


def write_posterior(exp, draws: dict, run_dir: Path) -> list[str]:
    """posterior.npz (no pickle) and the posterior predictive plot."""
    from runner import figures, posterior

    np.savez_compressed(run_dir / "posterior.npz", **draws)
    drawn = figures.predictive_plot(draws, posterior.observed_data(exp.model, exp.data),
                                  run_dir / "plots" / "posterior_predictive.png")
    return ["posterior.npz", *(["plots/posterior_predictive.png"] if drawn else [])]


def source_artifacts(model, run_dir: Path) -> list[str]:
    """The model's source file, copied into the run (provenance: the code that was fitted)."""
    import shutil

    src = model.source_file()
    if not src or not Path(src).is_file():
        return []
    rel = f"model_source/{Path(src).name}"
    (run_dir / "model_source").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, run_dir / rel)
    return [rel]


def point_shapes(data) -> dict:
    """The shape of one data point of each array (all but the first axis), by name ("" for one
    unnamed array): new data for predictions must have the same."""
    import numpy as np

    if isinstance(data, dict):
        return {k: list(np.shape(v)[1:]) for k, v in data.items() if np.ndim(v) > 0}
    return {"": list(np.shape(data)[1:])}


def model_files(exp, run_dir: Path) -> list[str]:
    """What every run with a model leaves for predictions and provenance: the model's source,
    sites.json (the fit's observed and enumerated sites: what predict draws or assigns) and
    constants.json (a function model's scalar data, such as sizes: predict reuses them)."""
    files = source_artifacts(exp.model, run_dir)
    if exp.data is not None:
        from runner import posterior

        files.append(write_json(run_dir / "sites.json", {
            "observed": posterior.observed_sites(exp.model, exp.data),
            "enumerated": posterior.enumerated_sites(exp.model, exp.data),
            "point_shapes": point_shapes(exp.data)}))
    if getattr(exp.model, "constants", None):
        files.append(write_json(run_dir / "constants.json", exp.model.constants))
    return files


PREDICT_FILES = ("config.yaml", "latents.json", "params.json", "posterior.npz", "constants.json", "sites.json")


def predict_files(run_dir: Path) -> dict:
    """The files of the run directory that runner.predict and the pyfunc model read (those there)."""
    return {n: run_dir / n for n in PREDICT_FILES if (run_dir / n).is_file()}
