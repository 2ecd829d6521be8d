"""One run: build the parts, fit them in one compiled program, write the results into Hydra's
run directory, then log them to MLflow."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from runner.errors import ConfigError, describe

CHOICE_GROUPS = ("model", "guide", "loss", "optim", "data", "inference")


def fail(message: str, code: int = 2):
    print(f"runner: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def configure_jax(cfg: DictConfig) -> None:
    import jax

    cache = cfg.get("jax", {}).get("cache_dir")
    if cache:
        jax.config.update("jax_compilation_cache_dir", str(cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def to_lists(tree):
    """JSON-ready: arrays as nested lists (a param may itself be a pytree: a flow's weights)."""
    import jax

    return {k: jax.tree.map(lambda x: np.asarray(x).tolist(), v) for k, v in tree.items()}


def write_outputs(run_dir: Path, cfg: DictConfig, exp, result, figures: bool = True) -> tuple[list[str], dict]:
    """Everything the run produced, on disk first, so a tracking failure loses no fit.
    Returns the artifact paths (relative to run_dir) and the metrics written to metrics.json."""
    from runner import plots

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (run_dir / "params.json").write_text(json.dumps(to_lists(result.params), indent=1))
    row = result.best_row
    metrics = {"scalars": scalar_metrics(result),
               "curves": {"loss": result.losses[row].tolist(),
                          **{f"grad_norm/{k}": v[row].tolist() for k, v in result.grad_norms.items()}}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    if not figures:
        return ["config.yaml", "params.json", "metrics.json"], metrics
    plots.loss_plot(result, run_dir / "plots" / "loss.png")
    model_png = f"plots/{exp.model.name}.png"
    plots.model_plot(exp.model, result, exp.data, run_dir / model_png)
    return ["config.yaml", "params.json", "metrics.json", "plots/loss.png", model_png], metrics


def scalar_metrics(result) -> dict:
    import warnings

    finals = result.final_losses
    inits = result.initial_losses
    with warnings.catch_warnings():  # all-NaN spreads are expected when restarts diverge
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            "final_loss": result.final_loss,
            "initial_loss": result.initial_loss,
            "best_restart": result.best,
            "restarts_trained": len(result.trained),
            "final_loss_min": float(np.nanmin(finals)),
            "final_loss_median": float(np.nanmedian(finals)),
            "final_loss_max": float(np.nanmax(finals)),
            "initial_loss_min": float(np.nanmin(inits)),
            "initial_loss_median": float(np.nanmedian(inits)),
            "initial_loss_max": float(np.nanmax(inits)),
            "restarts_failed": restarts_failed(result),
        }


def restarts_failed(result) -> int:
    """Restarts whose loss became NaN or inf (at initialisation or in training)."""
    bad = set(np.flatnonzero(~np.isfinite(result.initial_losses)).tolist())
    bad |= {int(result.trained[t]) for t in np.flatnonzero(~np.isfinite(result.final_losses))}
    return len(bad)


def failure_step(result) -> int | None:
    """First step at which the selected restart's loss is NaN/inf (None if it stayed finite)."""
    bad = np.flatnonzero(~np.isfinite(result.losses[result.best_row]))
    return int(bad[0]) if bad.size else None


def run(cfg: DictConfig):
    """The Hydra task: choices and run directory from Hydra, then execute."""
    from hydra.core.hydra_config import HydraConfig

    from hydra.types import RunMode

    from runner.sweep import read_sweep

    hc = HydraConfig.get()
    choices = {g: hc.runtime.choices.get(g) for g in CHOICE_GROUPS}
    sweep = None
    if hc.mode == RunMode.MULTIRUN:
        sweep = read_sweep(hc.sweep.dir)
        sweep = {**(sweep or {}), "overrides": list(hc.overrides.task), "job": int(hc.job.num)}
    run_dir = Path(hc.runtime.output_dir)
    if sweep is None:
        outcome = execute(cfg, choices, run_dir, overrides=list(hc.overrides.task))
    else:  # a failed job is recorded (runner_status.json) and the sweep goes on with the next
        try:
            outcome = execute(cfg, choices, run_dir, sweep=sweep)
        except SystemExit as e:
            if e.code in (130, 143):
                raise
            return None
        except Exception as e:
            from runner.errors import INTERRUPTED

            if INTERRUPTED["code"]:
                raise
            write_status(run_dir, "failed", error=f"{type(e).__name__}: {e}"[:500])
            print(f"runner: error: job {' '.join(sweep['overrides'])} failed: {describe(e)}", file=sys.stderr)
            return None
    return None if outcome is None else outcome.final_loss


@dataclass
class Outcome:
    run_id: str
    result: object  # runner.fit.FitResult
    run_dir: Path
    results: list = None  # SVI: one per replicate
    scalars: dict = None  # the run's scalar metrics

    @property
    def final_loss(self) -> float | None:
        if hasattr(self.result, "final_loss"):  # SVI: the kept replicate's
            return self.result.final_loss
        return (self.scalars or {}).get("final_loss")


def write_status(run_dir: Path, status: str, **extra) -> None:
    from runner.sweep import STATUS_FILE

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / STATUS_FILE).write_text(json.dumps({"status": status, **extra}))


@dataclass
class Report:
    """What one inference method produced, already written into the run directory."""
    scalars: dict
    curves: dict
    artifacts: list
    line: str  # the end-of-run summary (without the run id)
    key_derivation: str
    results: list = None  # SVI: one FitResult per replicate
    result: object = None  # the kept FitResult / EMResult / NUTSResult
    failed: str | None = None  # every restart diverged: why (the run ends FAILED)
    tags: dict = None  # extra tags (e.g. failure_step)


def write_json(path: Path, obj) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))
    return path.name


def discrete_outputs(exp, latents: dict, run_dir: Path, scalars: dict, extra: dict | None = None) -> list[str]:
    """latents.json (the point estimate of the global latent sites), assignments.json (MAP
    values of the enumerated sites from infer_discrete) and avg_loglik for mixture families."""
    from runner import posterior

    files = [write_json(run_dir / "latents.json", to_lists(latents))]
    if exp.data is None:
        return files
    if exp.model.has_em:
        from runner.em import average_loglik

        scalars["avg_loglik"] = average_loglik(exp.model, latents, exp.data)
    found = extra if extra is not None else posterior.assignments(exp.model, latents, exp.data)
    if found:
        files.append(write_json(run_dir / "assignments.json", to_lists(found)))
    return files


def job_label(sweep: dict | None) -> str:
    """`job 3/8 ` inside a sweep (Hydra's job number, counted from 1), else empty."""
    if not sweep or sweep.get("job") is None:
        return ""
    return f"job {sweep['job'] + 1}/{sweep['jobs']} " if sweep.get("jobs") else f"job {sweep['job'] + 1} "


def run_svi(cfg: DictConfig, exp, run_dir: Path, sweep: dict | None = None, on_replicates=None) -> Report:
    """`on_replicates(results)`: called with the replicates' results before the figures (their
    child runs are logged meanwhile), unless every restart diverged."""
    import jax

    from runner import posterior
    from runner.fit import KEY_DERIVATION, fit
    from runner.progress import Progress

    results = fit(exp, progress=Progress(exp.steps, label=job_label(sweep)) if cfg.get("progress", True) else None)
    finals = np.array([r.final_loss for r in results])
    best = int(np.nanargmin(finals)) if np.isfinite(finals).any() else 0
    result = results[best]
    if len(results) > 1 and on_replicates is not None and np.isfinite(result.final_loss):
        on_replicates(results)
    artifacts, metrics = write_outputs(run_dir, cfg, exp, result, figures=bool(np.isfinite(result.final_loss)))
    if not np.isfinite(result.final_loss):  # every restart (of every replicate) diverged
        step = failure_step(result)
        trained, total = len(result.trained) * len(results), exp.restarts * len(results)
        return Report(scalars={k: v for k, v in metrics["scalars"].items() if np.isfinite(v)},
                      curves=metrics["curves"], artifacts=artifacts, line="", key_derivation=KEY_DERIVATION,
                      result=result, tags={"failure_step": step},
                      failed=f"all trained restarts diverged ({trained} of {total} trained; loss NaN/inf "
                             f"from step {step}): lower optim.lr "
                             f"(now {cfg.optim.get('lr')}) or check the data")
    scalars, curves = metrics["scalars"], metrics["curves"]
    if len(results) > 1:  # the run is the parent of its replicates: their spread, best one's curves
        scalars = {"final_loss": float(finals.mean()), "final_loss_mean": float(finals.mean()),
                   "final_loss_std": float(finals.std()), "final_loss_min": float(finals.min()),
                   "best_replicate": best, "replicates": len(results)}
    latent_names = posterior.latent_sites(exp.model, exp.data)
    latents = posterior.point_estimate(result.samples, latent_names)
    draws = posterior.with_deterministic(exp.model, exp.data, result.samples)
    summary = posterior.summarize(draws, [*latent_names, *posterior.deterministic_sites(exp.model, exp.data)])
    artifacts.append(write_json(run_dir / "summary.json", summary))
    scalars.update(posterior.summary_metrics(summary))
    extra = None
    if "assignment_probs" in result.params:  # the GMM full guide: its learned q(assignment)
        extra = {**posterior.assignments(exp.model, latents, exp.data),
                 "assignment_probs": result.params["assignment_probs"]}
    artifacts += discrete_outputs(exp, latents, run_dir, scalars, extra)
    if exp.posterior_samples:
        import jax.numpy as jnp

        data = None if exp.data is None else jax.tree.map(jnp.asarray, exp.data)
        init = exp.model.init_values(jax.random.PRNGKey(0), data) if data is not None else None
        draws = posterior.predictive_draws(exp.model, exp.data, exp.posterior_samples,
                                           jax.random.PRNGKey(exp.seed + 2**20),
                                           guide=exp.guide_builder(exp.model, init), params=result.params)
        artifacts += write_posterior(exp, draws, run_dir)
    else:
        artifacts += write_guide_draws(result.samples, latent_names, run_dir)
    line = (f"final_loss={scalars['final_loss']:.6g} best_restart={result.best}/{exp.restarts}"
            if len(results) == 1 else
            f"final_loss={scalars['final_loss']:.6g} replicates={len(results)} "
            f"std={scalars['final_loss_std']:.4g} best_replicate={best}")
    return Report(scalars=scalars, curves=curves, artifacts=artifacts, line=line,
                  key_derivation=KEY_DERIVATION, results=results, result=result)


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
    from runner import plots, posterior

    np.savez_compressed(run_dir / "posterior.npz", **draws)
    plots.predictive_plot(draws, posterior.observed_data(exp.model, exp.data),
                          run_dir / "plots" / "posterior_predictive.png")
    return ["posterior.npz", "plots/posterior_predictive.png"]


def run_em(cfg: DictConfig, exp, run_dir: Path, sweep: dict | None = None) -> Report:
    from runner import plots, posterior
    from runner.em import KEY_DERIVATION, fit_em

    res = fit_em(exp)
    curve = res.loglik[res.best]
    curve = curve[np.isfinite(curve)]
    finals = res.final_loglik
    final = float(finals[res.best])
    scalars = {"avg_loglik": final, "final_loss": -final, "best_restart": res.best,
               "iterations": len(curve), "avg_loglik_min": float(np.nanmin(finals)),
               "avg_loglik_median": float(np.nanmedian(finals)), "avg_loglik_max": float(np.nanmax(finals)),
               "restarts_converged": int(np.isnan(res.loglik[:, -1]).sum())}
    curves = {"loglik": curve.tolist()}  # per-iteration average log-likelihood (avg_loglik: the final one)
    write_json(run_dir / "metrics.json", {"scalars": scalars, "curves": curves})
    artifacts = ["config.yaml", "metrics.json", write_json(run_dir / "params.json", to_lists(res.params))]
    sites = posterior.enumerated_sites(exp.model, exp.data)
    artifacts.append(write_json(run_dir / "assignments.json", {sites[0]: res.assignments.tolist()}))
    plots.curves_plot(res.loglik, res.best, run_dir / "plots" / "loglik.png", "average log-likelihood",
                      f"EM, {exp.restarts} restart(s)")
    artifacts.append("plots/loglik.png")
    X = np.asarray(exp.model.em_data(exp.data))
    if X.ndim > 1:
        from runner.models.plots import image_side

        if image_side(X.shape[-1]):
            one = {k: np.asarray(v)[None] for k, v in res.params.items()}
            plots.components_plot(exp.model, {**one, "scale": np.sqrt(one.get("variances", 1.0))},
                                  X, run_dir / "plots" / "components.png")
            artifacts.append("plots/components.png")
    line = f"avg_loglik={final:.6g} best_restart={res.best}/{exp.restarts} iterations={len(curve)}"
    return Report(scalars=scalars, curves=curves, artifacts=artifacts, line=line,
                  key_derivation=KEY_DERIVATION, result=res)


def run_nuts(cfg: DictConfig, exp, run_dir: Path, sweep: dict | None = None) -> Report:
    import jax

    from runner import plots, posterior
    from runner.mcmc import KEY_DERIVATION, fit_nuts

    res = fit_nuts(exp)
    scalars = {"divergences": res.divergences}
    summary = posterior.summarize(res.samples, list(res.samples), by_chain=True)
    for name, stats in summary.items():
        scalars[f"r_hat/{name}"] = float(np.nanmax(stats["r_hat"]))
        scalars[f"n_eff/{name}"] = float(np.nanmin(stats["n_eff"]))
    scalars.update(posterior.summary_metrics(summary))
    write_json(run_dir / "metrics.json", {"scalars": scalars, "curves": {}})
    artifacts = ["config.yaml", "metrics.json", write_json(run_dir / "summary.json", summary)]
    flat = res.flat()
    draws = dict(flat)
    artifacts += discrete_outputs(exp, res.means(), run_dir, scalars)
    if exp.posterior_samples:
        draws.update(posterior.predictive_draws(exp.model, exp.data, exp.posterior_samples,
                                                jax.random.PRNGKey(exp.seed + 2**20), posterior=draws))
        artifacts += write_posterior(exp, draws, run_dir)
    else:
        np.savez_compressed(run_dir / "posterior.npz", **draws)
        artifacts.append("posterior.npz")
    plots.trace_plot(res.samples, run_dir / "plots" / "trace.png")
    plots.components_plot(exp.model, flat, exp.data, run_dir / f"plots/{exp.model.name}.png")
    artifacts += ["plots/trace.png", f"plots/{exp.model.name}.png"]
    worst = max((v for k, v in scalars.items() if k.startswith("r_hat/")), default=float("nan"))
    line = (f"samples={exp.inference['samples']}x{exp.inference['chains']} max_r_hat={worst:.4g} "
            f"divergences={res.divergences}")
    return Report(scalars=scalars, curves={}, artifacts=artifacts, line=line,
                  key_derivation=KEY_DERIVATION, result=res)


METHODS = {"svi": run_svi, "em": run_em, "nuts": run_nuts}
#: config groups that are tagged for each method (the others do not act on its result)
METHOD_GROUPS = {"svi": CHOICE_GROUPS, "em": ("model", "data", "inference"), "nuts": ("model", "data", "inference")}


def run_name(choices: dict, method: str, overrides) -> str:
    """A name a person can read: the choices, then the overrides that change the result, e.g.
    `gmm-autodelta-lr0.1-seed3`."""
    import re

    from runner.sweep import result_overrides

    head = [choices.get("model") or "run", choices.get("guide") if method == "svi" else method]
    rest = []
    for o in result_overrides(overrides or []):
        key, _, value = o.lstrip("+~").partition("=")
        if key in ("model", "guide", "inference", "model.fn") or key.startswith("hydra"):
            continue
        if key.endswith(".path"):  # a file: its name, not its whole path
            rest.append(Path(value).stem)
            continue
        rest.append(value if "." not in key and key in CHOICE_GROUPS else f"{key.split('.')[-1]}{value}")
    return re.sub(r"[^\w.\-]+", "_", "-".join(str(x) for x in [*head, *rest] if x))[:250]


def git_commit(folder: Path) -> str | None:
    """HEAD of the git repository that holds `folder`, or None (no git, not a repository)."""
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def runner_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("runner")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def machine_tags() -> dict:
    """Where the run ran: JAX backend, device kind and count; provenance: the git commit of the
    user's project (the repository of the current directory) as MLflow's source commit, runner's
    own version (and its commit when runner runs from a git checkout)."""
    import os

    import jax

    devices = jax.devices()
    tags = {"jax.backend": jax.default_backend(), "jax.device_kind": devices[0].device_kind,
            "jax.device_count": len(devices), "runner.version": runner_version()}
    project = git_commit(Path(os.getcwd()))
    if project:
        tags["mlflow.source.git.commit"] = project
    own = git_commit(Path(__file__).resolve().parent) if (Path(__file__).resolve().parent.parent / ".git").exists() else None
    if own:
        tags["runner.git_commit"] = own
    return tags


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


def dataset_info(cfg: DictConfig, choices: dict, data) -> dict | None:
    """What mlflow.log_input records for the run's data: name, source, the array (MLflow digests it)."""
    if data is None:
        return None
    node = cfg.get("data") or {}
    source = str(node.get("path") or node.get("_target_") or choices.get("data"))
    array = {k: np.asarray(v) for k, v in data.items()} if isinstance(data, dict) else np.asarray(data)
    return {"name": choices.get("data") or "data", "source": source, "array": array}


def pyfunc_model(cfg: DictConfig, exp, report: Report, run_dir: Path) -> dict | None:
    """What runner/tracking/pyfunc.py needs to log the fit as an MLflow model: runs with data and
    a fit to predict from (latents.json, or EM's params.json), unless tracking.log_model=false."""
    if not cfg.tracking.get("log_model", True) or report.failed or exp.data is None:
        return None
    files = {n: run_dir / n for n in ("config.yaml", "latents.json", "params.json", "posterior.npz",
                                     "constants.json", "sites.json")
             if (run_dir / n).is_file()}
    if "latents.json" not in files and not (exp.method == "em" and "params.json" in files):
        return None
    return {"files": files, "method": exp.method, "data": exp.data,
            "constants": dict(getattr(exp.model, "constants", None) or {})}


def summary_table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def execute(cfg: DictConfig, choices: dict, run_dir: Path, sweep: dict | None = None,
            overrides: list | None = None) -> Outcome | None:
    """One run. In a sweep (`sweep` from runner.sweep): a child of the sweep's parent run, skipped
    when its config already has a FINISHED run (unless rerun=true).

    The MLflow run is created (RUNNING, with pid and host tags) in the background while the fit
    compiles; an interruption ends it KILLED, a crash FAILED, so the store tells the truth."""
    from runner.build import build, flatten
    from runner.sweep import config_hash, group_label

    from runner.tracking import Tracker, TrackingError, check_reachable

    def failed(message: str, code: int = 2):
        if sweep is not None:
            write_status(run_dir, "failed", error=message)
        fail(message, code)

    try:
        check_reachable(cfg.tracking.uri)
    except TrackingError as e:
        failed(str(e))
    chash = config_hash(cfg)
    tracker = None
    if sweep is not None:  # the sweep made the store: check for a finished twin before any work
        tracker = Tracker(cfg.tracking.uri, cfg.tracking.experiment).start()
        done = None if cfg.get("rerun", False) else tracker.find_finished(chash)
        if done:
            write_status(run_dir, "skipped", run_id=done)
            print(f"runner: skipped {' '.join(sweep['overrides'])}: already FINISHED as run {done}")
            return None
    try:
        exp = build(cfg)
    except ConfigError as e:
        failed(str(e))

    import jax

    tagged = METHOD_GROUPS[exp.method]
    # model=fn: the function's name says more than the choice's
    label = exp.model.name if choices.get("model") in (None, "fn") else choices["model"]
    name = run_name({**choices, "model": label}, exp.method,
                    sweep["overrides"] if sweep is not None else overrides)
    tags = {**{g: c for g, c in choices.items() if c is not None and g in tagged}, "run_dir": str(run_dir),
            "config_hash": chash, "inference": exp.method, "mlflow.runName": name, **machine_tags()}
    if getattr(exp.model, "fn_path", None):
        tags["model.fn"] = exp.model.fn_path
    if sweep is not None:
        tags.update({"overrides": " ".join(sweep["overrides"]), "config_group": group_label(sweep["overrides"])})
        if sweep.get("parent_run_id"):
            tags["mlflow.parentRunId"] = sweep["parent_run_id"]
    params = flatten(cfg)
    params["jax_version"] = jax.__version__
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    configure_jax(cfg)
    if tracker is None:
        tracker = Tracker(cfg.tracking.uri, cfg.tracking.experiment)
    try:
        if sweep is None:
            tracker.start(open_run=tags)  # created in the background while the fit compiles
        else:
            tracker.open(tags)  # the sweep's tracker is already started
        max_points = cfg.tracking.get("max_points_per_curve")

        def on_replicates(results):  # their child runs are logged by the worker while the figures are drawn
            from runner.fit import KEY_DERIVATION

            try:
                tracker.wait()  # (the parent's run id)
            except Exception:
                return  # the store's error is reported where the parent is logged
            log_replicates(tracker, cfg, exp, results, run_dir, {**params, "key_derivation": KEY_DERIVATION},
                           tags, max_points)

        hooks = {"on_replicates": on_replicates} if exp.method == "svi" else {}
        report = METHODS[exp.method](cfg, exp, run_dir, sweep, **hooks)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C (130) or SIGTERM (143): KILLED
        if sweep is not None:
            write_status(run_dir, "failed", error="interrupted")
        _end_quietly(tracker, "KILLED", params, run_dir)
        raise
    except Exception as e:  # (an interruption may arrive wrapped by JAX as another exception)
        from runner.errors import INTERRUPTED

        status = "KILLED" if INTERRUPTED["code"] else "FAILED"
        _end_quietly(tracker, status, params, run_dir, {"error": f"{type(e).__name__}: {e}"[:500]})
        raise
    params["key_derivation"] = report.key_derivation
    report.artifacts += source_artifacts(exp.model, run_dir)
    if exp.data is not None:  # the fit's observed and enumerated sites: what predict draws or assigns
        from runner import posterior

        report.artifacts.append(write_json(run_dir / "sites.json", {
            "observed": posterior.observed_sites(exp.model, exp.data),
            "enumerated": posterior.enumerated_sites(exp.model, exp.data)}))
    if getattr(exp.model, "constants", None):  # a function model's scalar data (sizes): predict reuses them
        report.artifacts.append(write_json(run_dir / "constants.json", exp.model.constants))
    try:
        run_id = tracker.log_run(tags={**tags, **(report.tags or {})}, params=params, scalars=report.scalars,
                                 curves=report.curves, artifact_dir=run_dir, artifacts=report.artifacts,
                                 max_points=max_points, status="FAILED" if report.failed else "FINISHED",
                                 into_open_run=True, dataset=dataset_info(cfg, choices, exp.data),
                                 model=pyfunc_model(cfg, exp, report, run_dir))
        tracker.flush()  # the replicates' child runs: done, or their error raised here
    except TrackingError as e:
        failed(f"{e}; the fit is saved in {run_dir}")
    except Exception as e:
        failed(f"tracking to {cfg.tracking.uri} failed ({describe(e)}); "
               f"the fit is saved in {run_dir}", code=1)
    for stale in tracker.reaped:
        print(f"runner: marked run {stale} FAILED: it was left RUNNING by a process that is gone")
    if report.failed:
        failed(f"{report.failed}; run {run_id} is FAILED, what was finite is logged", code=1)
    if sweep is not None:
        write_status(run_dir, "run", run_id=run_id)
    what = f"{label}/{choices.get('guide')}" if exp.method == "svi" else f"{label}/{exp.method}"
    print(f"runner: {job_label(sweep)}{what} {report.line} run_id={run_id}")
    if sweep is None:  # a short table for a person; sweeps keep to one line per job
        key = "final_loss" if "final_loss" in report.scalars else None
        rows = [("run", f"{name}  ({run_id})"), ("choices", " ".join(f"{g}={choices[g]}" for g in tagged if choices.get(g))),
                *([(key, f"{report.scalars[key]:.6g}")] if key else []),
                *([("avg_loglik", f"{report.scalars['avg_loglik']:.6g}")] if "avg_loglik" in report.scalars else []),
                *([("best_restart", f"{report.scalars['best_restart']:.0f} of {exp.restarts}")]
                  if "best_restart" in report.scalars else []),
                ("outputs", str(run_dir)),
                ("look", f"mlflow ui --backend-store-uri {cfg.tracking.uri}")]
        print(summary_table(rows))
    return Outcome(run_id=run_id, result=report.result, run_dir=run_dir, results=report.results,
                   scalars=report.scalars)


def _end_quietly(tracker, status: str, params: dict, run_dir: Path, tags: dict | None = None) -> None:
    """End the opened run on an interruption or crash; never mask the original exception."""
    try:
        tracker.end(status, params=params, tags=tags, artifact_dir=run_dir, artifacts=["config.yaml", "metrics.json"])
    except BaseException:
        pass


def log_replicates(tracker, cfg, exp, results, run_dir, params, tags, max_points) -> None:
    """One child run per replicate, under the tracker's run, with its own seed, params, curves and
    params.json; submitted to the tracking worker (tracker.flush() waits for them)."""
    base = {k: v for k, v in tags.items() if k not in ("config_group", "mlflow.parentRunId")}
    for i, r in enumerate(results):
        sub = run_dir / f"replicate_{i}"
        files, m = write_outputs(sub, cfg, exp, r, figures=False)
        tracker.submit("log_run", tags={**base, "mlflow.parentRunId": tracker.run_id, "replicate": i,
                                        "mlflow.runName": f"replicate {i} (seed {exp.seed + i})"},
                       params={**params, "seed": exp.seed + i, "replicate": i},
                       scalars=m["scalars"], curves=m["curves"], artifact_dir=sub,
                       artifacts=files[1:], max_points=max_points)
