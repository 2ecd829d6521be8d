"""The run directory, from a FitOutput: one writer for every method. Every file a run leaves is
written before anything is recorded, so a tracking failure loses no fit. Plain data in, files
out; no tracking store, no Hydra.

    params.json       the fitted parameters (a guide's, EM's)
    metrics.json      every scalar and every curve as the fit kept it (and the curves' steps)
    summary.json      the posterior per site (mean, std, median, 90% interval; n_eff and r_hat
                      for Markov chains), and posterior/<site>/mean|std metrics
    latents.json      a point estimate of the latent sites (what runner.predict conditions on)
    assignments.json  the discrete sites' MAP values (infer_discrete) or the method's own
    posterior.npz     draws of the latent sites (or, with posterior.samples, posterior predictive
                      draws and plots/posterior_predictive.png)
    inference_data.nc the posterior as ArviZ InferenceData (runner/inference_data.py)
    plots/<model>.png the model's own figure from the draws; the method's figures (`extras`)
    <child>/          a child run's params.json and metrics.json (SVI's replicates)
    model_source/, sites.json, constants.json   what predictions and provenance need (last)
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Written:
    """What the writer left: the run's files (relative to the run directory), its scalars (the
    fit's and the writer's: summary metrics, avg_loglik), and each child's files."""
    files: list
    scalars: dict
    children: list = field(default_factory=list)  # (Child, its files relative to its folder)


def load() -> None:
    """What writes a run's files after its fit, imported (h5netcdf, for inference_data.nc; the figures
    are drawn by the command's helper process, runner.figures): in a background thread while a
    sweep's store opens (runner.sweep; not while a run compiles: an import holds the GIL that
    tracing needs). An error is left to the writer, which says it."""
    try:
        import h5netcdf  # noqa: F401 (runner.inference_data.write_netcdf)
    except Exception:
        pass


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


def write(exp, out, run_dir: Path, children_written=None) -> Written:
    """The run directory of a fit (see the module docstring). A failed fit (every restart
    diverged) leaves its params and metrics, no figures; its scalars are the finite ones.
    `children_written(children)`: called once the children's files are written (first: their
    runs can be logged while the rest is written), with [(child, its files)]. The figures are
    drawn in the command's helper process while the rest is written (runner.figures.elsewhere)."""
    from runner import figures

    with figures.elsewhere() as drawn:
        written = write_files(exp, out, run_dir, children_written)
    written.files = drawn.kept(run_dir, written.files)
    return written


def write_files(exp, out, run_dir: Path, children_written=None) -> Written:
    run_dir.mkdir(parents=True, exist_ok=True)
    files = ["config.yaml"]
    if out.params is not None:
        files.append(write_json(run_dir / "params.json", to_lists(out.params)))
    scalars = dict(out.scalars)
    if out.failed:
        files.append(write_metrics(run_dir, scalars, out.curves, out.curve_steps))
        files += model_files(exp, run_dir)
        return Written(files, {k: v for k, v in scalars.items() if np.isfinite(v)})
    children = [(child, child_files(child, run_dir / child.folder)) for child in out.children]
    if children and children_written is not None:
        children_written(children)
    files += exp.inference.extras(exp, out, run_dir)  # the method's own files and figures
    files += posterior_files(exp, out, run_dir, scalars)
    files.append(write_metrics(run_dir, scalars, out.curves, out.curve_steps))
    files += model_files(exp, run_dir)
    return Written(files, scalars, children)


def child_files(child, folder: Path) -> list[str]:
    """A child run's params.json and metrics.json in its own folder."""
    folder.mkdir(parents=True, exist_ok=True)
    files = [write_json(folder / "params.json", to_lists(child.fitted))] if child.fitted is not None else []
    return [*files, write_metrics(folder, child.scalars, child.curves, child.curve_steps)]


def posterior_files(exp, out, run_dir: Path, scalars: dict) -> list[str]:
    """What the draws give (summary, latents, assignments, posterior.npz, the model's figure,
    inference_data.nc); a method without draws of the model's sites (EM) leaves its assignments."""
    if not out.draws:
        return point_files(exp, out, None, run_dir, scalars)
    from runner import figures, inference_data, posterior

    model, data = exp.model, exp.data
    sites = posterior.roles(model, data)
    summary, metrics, full = posterior.describe(model, data, out.draws, out.markov, sites)
    scalars.update(metrics)
    files = [write_json(run_dir / "summary.json", summary), *point_files(exp, out, out.latents, run_dir, scalars)]
    kept, predictive = {*sites.latent, *sites.deterministic}, None
    posterior_draws = out.draws if out.markov else {k: v for k, v in full.items() if k in kept}
    if exp.posterior_samples:
        drawn = predictive_draws(exp, out)
        files += write_posterior(exp, drawn, run_dir)
        predictive = {k: v for k, v in drawn.items() if k in sites.observed} or None
        if not out.markov:  # the posterior the mock data were drawn from, paired draw by draw
            posterior_draws = {k: v for k, v in drawn.items() if k in kept}
    else:
        files += write_draws({k: v for k, v in full.items() if k in sites.latent}, run_dir)
    model_png = f"plots/{model.name}.png"
    if figures.components_plot(model, out.flat(), data, run_dir / model_png):
        files.append(model_png)
    return files + inference_data.write(exp, run_dir, posterior_draws, chains=out.markov, predictive=predictive)


def point_files(exp, out, latents: dict | None, run_dir: Path, scalars: dict) -> list[str]:
    """latents.json (a point estimate of the global latent sites), assignments.json (the
    method's own assignments, or MAP values of the enumerated sites from infer_discrete) and,
    for mixture families (EM's protocol), avg_loglik at the point estimate."""
    from runner import posterior
    from runner.inference import program_cache
    from runner.models import mixtures

    files = [] if latents is None else [write_json(run_dir / "latents.json", to_lists(latents))]
    if exp.data is None:
        return files
    kept = program_cache.for_experiment(exp) if latents is not None else None
    if latents is not None and mixtures.supports(exp.model):
        scalars["avg_loglik"] = mixtures.average_loglik(exp.model, latents, exp.data, kept=kept)
    found = out.assignments
    if found is None and latents is not None:
        found = posterior.assignments(exp.model, latents, exp.data, kept=kept)
    if found:
        files.append(write_json(run_dir / "assignments.json", to_lists(found)))
    return files


def predictive_draws(exp, out) -> dict:
    """exp.posterior_samples posterior predictive draws: latent draws (the method's own `draw`,
    or its first draws), then the model given them."""
    import jax

    from runner import posterior

    k_draws, k_model = jax.random.split(jax.random.PRNGKey(exp.seed + 2**20))
    n = exp.posterior_samples
    latents = out.draw(n, k_draws) if out.draw is not None else {k: v[:n] for k, v in out.flat().items()}
    return posterior.predictive_draws(exp.model, exp.data, latents, k_model)


MAX_DRAW_BYTES = 16 * 2**20  # posterior.npz of the draws: thinned to stay below this
MIN_DRAWS = 100


def write_draws(samples: dict, run_dir: Path) -> list[str]:
    """posterior.npz: the fit's draws, so that predictions are posterior predictive
    (runner.predict, the pyfunc model). Skipped for a point estimate (every draw the same) and
    where even MIN_DRAWS would not fit MAX_DRAW_BYTES (images x components)."""
    draws = {n: np.asarray(v) for n, v in samples.items()}
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
    if isinstance(data, dict):
        return {k: list(np.shape(v)[1:]) for k, v in data.items() if np.ndim(v) > 0}
    return {"": list(np.shape(data)[1:])}


def model_files(exp, run_dir: Path) -> list[str]:
    """What every run with a model leaves for predictions and provenance: the model's source,
    sites.json (the fit's observed and enumerated sites: what predict draws or assigns) and
    constants.json (a function model's scalar data, such as sizes: predict reuses them)."""
    files = source_artifacts(exp.model, run_dir)
    if getattr(exp.model, "constants", None):
        files.append(write_json(run_dir / "constants.json", exp.model.constants))
    if exp.data is not None:
        from runner import posterior

        sites = posterior.roles(exp.model, exp.data)
        files.append(write_json(run_dir / "sites.json", {"observed": sites.observed, "enumerated": sites.enumerated,
                                                         "point_shapes": point_shapes(exp.data)}))
    return files


PREDICT_FILES = ("config.yaml", "latents.json", "params.json", "posterior.npz", "constants.json", "sites.json")


def predict_files(run_dir: Path) -> dict:
    """The files of the run directory that runner.predict and the pyfunc model read (those there)."""
    return {n: run_dir / n for n in PREDICT_FILES if (run_dir / n).is_file()}
