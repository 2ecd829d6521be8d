"""One run: build the parts, fit them in one compiled program, write the results into Hydra's
run directory, then log them to MLflow."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from runner.errors import ConfigError

CHOICE_GROUPS = ("model", "guide", "loss", "optim", "data")


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
    return {k: np.asarray(v).tolist() for k, v in tree.items()}


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
    finals = result.final_losses
    inits = result.initial_losses
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
    }


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
        sweep = {**(sweep or {}), "overrides": list(hc.overrides.task)}
    outcome = execute(cfg, choices, Path(hc.runtime.output_dir), sweep=sweep)
    return None if outcome is None else outcome.final_loss


@dataclass
class Outcome:
    run_id: str
    result: object  # runner.fit.FitResult
    run_dir: Path
    results: list = None  # one per replicate

    @property
    def final_loss(self) -> float:
        return self.result.final_loss


def write_status(run_dir: Path, status: str, **extra) -> None:
    from runner.sweep import STATUS_FILE

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / STATUS_FILE).write_text(json.dumps({"status": status, **extra}))


def execute(cfg: DictConfig, choices: dict, run_dir: Path, sweep: dict | None = None) -> Outcome | None:
    """One run. In a sweep (`sweep` from runner.sweep): a child of the sweep's parent run, skipped
    when its config already has a FINISHED run (unless rerun=true)."""
    from runner.build import build, flatten
    from runner.sweep import config_hash, group_label

    from runner.tracking import Tracker

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
        if sweep is not None:
            write_status(run_dir, "failed", error=str(e))
        fail(str(e))

    import jax

    from runner.fit import KEY_DERIVATION, fit

    tracker = tracker or Tracker(cfg.tracking.uri, cfg.tracking.experiment).start()
    configure_jax(cfg)
    results = fit(exp)
    best = int(np.nanargmin([r.final_loss for r in results]))
    result = results[best]
    artifacts, metrics = write_outputs(run_dir, cfg, exp, result)
    params = flatten(cfg)
    params.update({"jax_version": jax.__version__, "key_derivation": KEY_DERIVATION})
    tags = {**{g: c for g, c in choices.items() if c is not None}, "run_dir": str(run_dir),
            "config_hash": chash}
    if sweep is not None:
        tags.update({"overrides": " ".join(sweep["overrides"]), "config_group": group_label(sweep["overrides"])})
        if sweep.get("parent_run_id"):
            tags["mlflow.parentRunId"] = sweep["parent_run_id"]
    scalars, curves = metrics["scalars"], metrics["curves"]
    if len(results) > 1:  # the run is the parent of its replicates: their spread, best one's curves
        finals = np.array([r.final_loss for r in results])
        scalars = {"final_loss": float(finals.mean()), "final_loss_mean": float(finals.mean()),
                   "final_loss_std": float(finals.std()), "final_loss_min": float(finals.min()),
                   "best_replicate": best, "replicates": len(results)}
    max_points = cfg.tracking.get("max_points_per_curve")
    try:
        run_id = tracker.log_run(tags=tags, params=params, scalars=scalars, curves=curves,
                                 artifact_dir=run_dir, artifacts=artifacts, max_points=max_points)
        if len(results) > 1:
            log_replicates(tracker, cfg, exp, results, run_dir, run_id, params, tags, max_points)
    except Exception as e:
        if sweep is not None:
            write_status(run_dir, "failed", error=str(e).splitlines()[0])
        fail(f"tracking to {cfg.tracking.uri} failed ({type(e).__name__}: {str(e).splitlines()[0]}); "
             f"the fit is saved in {run_dir}", code=1)
    if sweep is not None:
        write_status(run_dir, "run", run_id=run_id)
    final = scalars["final_loss"]
    where = (f"best_restart={result.best}/{exp.restarts}" if len(results) == 1 else
             f"replicates={len(results)} std={scalars['final_loss_std']:.4g} best_replicate={best}")
    print(f"runner: {choices.get('model')}/{choices.get('guide')} final_loss={final:.6g} {where} "
          f"run_id={run_id}")
    return Outcome(run_id=run_id, result=result, run_dir=run_dir, results=results)


def log_replicates(tracker, cfg, exp, results, run_dir, parent_id, params, tags, max_points) -> None:
    """One child run per replicate, with its own seed, params, curves and params.json."""
    base = {k: v for k, v in tags.items() if k not in ("config_group", "mlflow.parentRunId")}
    for i, r in enumerate(results):
        sub = run_dir / f"replicate_{i}"
        files, m = write_outputs(sub, cfg, exp, r, figures=False)
        tracker.log_run(tags={**base, "mlflow.parentRunId": parent_id, "replicate": i,
                              "mlflow.runName": f"replicate {i} (seed {exp.seed + i})"},
                        params={**params, "seed": exp.seed + i, "replicate": i},
                        scalars=m["scalars"], curves=m["curves"], artifact_dir=sub,
                        artifacts=files[1:], max_points=max_points)
