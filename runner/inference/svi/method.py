"""inference=svi: stochastic variational inference. The guide, loss and optimizer come from their
config groups; `restarts` initialisations (and `replicates` seeds) train side by side in one
compiled program (runner/inference/svi/program.py); `select` keeps the best by initial or final loss."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from runner.errors import ConfigError
from runner.inference.base import Child, Method, Report


@dataclass(frozen=True)
class Stop:
    """stop.rtol / stop.patience / stop.window: a restart stops once its smoothed loss (an
    exponential moving average over about `window` steps) has not fallen by `rtol` (relative)
    for `patience` steps."""
    rtol: float
    patience: int
    window: int

    @property
    def decay(self) -> float:
        return 1.0 - 1.0 / self.window


def stop_settings(cfg) -> Stop | None:
    """The `stop` block, checked (one ConfigError line), or None when stop.rtol is null (off)."""
    import math

    node = cfg.get("stop") or {}
    rtol = node.get("rtol")
    if rtol is None:
        return None
    if not isinstance(rtol, (int, float)) or isinstance(rtol, bool) or not math.isfinite(rtol) or rtol < 0:
        raise ConfigError(f"stop.rtol must be a number >= 0 (or null: no early stopping), got {rtol!r}")
    for key in ("patience", "window"):
        value = node.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"stop.{key} must be a positive integer, got {value!r}")
    return Stop(float(rtol), node["patience"], node["window"])


@dataclass
class SVI(Method):
    name = "svi"
    groups = ("model", "guide", "loss", "optim", "data", "inference")
    # built by prepare() from the guide, loss and optim groups and the top-level settings
    guide_builder: Callable = None  # (model, init_values) -> guide
    loss: Any = None  # numpyro ELBO
    optimizer: Any = None  # runner.optim.OptaxOptimizer | runner.optim.LBFGS
    steps: int = 1000
    select: str = "final"
    replicates: int = 1
    deterministic: bool = False  # every guide site a Delta, the rest enumerated: an exact objective
    lr: Any = None  # the optimizer's learning rate, for the hint when every restart diverges
    curve_points: int | None = 2000  # the fit keeps its curves at this many steps at most (tracking.max_points_per_curve)
    batch_size: int | None = None  # data.batch_size: rows per step (None: all)
    rows: int = 0  # the data's rows (with batch_size)
    data_plates: frozenset = frozenset()  # the plates over the data's rows (with batch_size)
    psis_draws: int = 1000  # guide draws for the PSIS k-hat diagnostic (diagnostics.psis_draws; 0: none)
    continuous: bool = False  # the guide is a density over every latent site (k-hat applies)
    stop: Stop | None = None  # early stopping (the top-level `stop` block; None: every step trained)

    def prepare(self, cfg, model, data) -> None:
        from numpyro.infer import TraceEnum_ELBO

        from runner.checks import instantiate, positive_int

        self.steps, self.replicates = positive_int(cfg, "steps"), positive_int(cfg, "replicates")
        self.select = cfg.select  # checked by build
        self.guide_builder = instantiate(cfg.guide, "guide")
        self.loss = instantiate(cfg.loss, "loss")
        particles = getattr(self.loss, "num_particles", 1)
        if not isinstance(particles, int) or isinstance(particles, bool) or particles < 1:
            raise ConfigError(f"loss.num_particles must be a positive integer, got {particles!r}")
        self.optimizer = instantiate(cfg.optim, "optim")
        self.lr = cfg.optim.get("lr")
        import math

        if self.lr is not None and (not isinstance(self.lr, (int, float)) or isinstance(self.lr, bool)
                                    or not math.isfinite(self.lr) or self.lr <= 0):
            raise ConfigError(f"optim.lr must be a positive finite number, got {self.lr!r}")
        if model.enumerated and not isinstance(self.loss, TraceEnum_ELBO):
            raise ConfigError(f"model '{model.name}' has enumerated discrete sites: use loss=traceenum")
        self.deterministic, self.continuous = check_guide(self, model, data)
        self.psis_draws = (cfg.get("diagnostics") or {}).get("psis_draws", 1000)
        if (not isinstance(self.psis_draws, int) or isinstance(self.psis_draws, bool)
                or not (self.psis_draws == 0 or self.psis_draws >= 10)):
            raise ConfigError(f"diagnostics.psis_draws must be 0 (off) or an integer >= 10, got {self.psis_draws!r}")
        self.stop = stop_settings(cfg)
        if self.stop is not None and self.optimizer.needs_deterministic:
            raise ConfigError("stop.rtol applies to the step optimizers (adam, sgd, ...); optim=lbfgs stops by its own tolerance")
        if self.optimizer.needs_deterministic and not self.deterministic:
            raise ConfigError("optim=lbfgs needs a deterministic objective (e.g. guide=autodelta); "
                              "this guide samples, so use a stochastic optimizer such as optim=adam")
        points = (cfg.get("tracking") or {}).get("max_points_per_curve", 2000)
        if points is not None and (not isinstance(points, int) or isinstance(points, bool) or points < 2):
            raise ConfigError(f"tracking.max_points_per_curve must be an integer >= 2 or null, got {points!r}")
        self.curve_points = points
        from runner.experiment import batch_size

        self.batch_size = batch_size(cfg)
        if self.batch_size is not None:
            self.rows, self.data_plates = minibatch_plates(model, data, self.batch_size)
            if self.optimizer.needs_deterministic:
                raise ConfigError("optim=lbfgs needs the full data at every step: drop data.batch_size")

    def label(self, choices: dict) -> str:
        return choices.get("guide") or self.name

    def make_guide(self, model, data, key):
        """A fresh guide for one restart, initialised from the model's init values drawn from
        `key` (the only place a guide is built: the fit, the checks and the draws call this;
        NumPyro's autoguides cache their prototype, so each restart needs its own)."""
        init_values = model.init_values(key, data) if data is not None else None
        try:
            return self.guide_builder(model, init_values)
        except TypeError as e:
            raise ConfigError(f"cannot build guide: {e}") from None

    def fit(self, exp, progress=None):
        """One FitResult per replicate."""
        from runner.inference.svi.loop import Checkpoint
        from runner.inference.svi.program import fit

        checkpoint = None
        run_dir = getattr(exp, "run_dir", None)
        if run_dir is not None and (exp.checkpoint_every_s is not None or exp.resume_dir is not None):
            path = Path(run_dir) / "checkpoint.npz"
            if exp.resume_dir is not None and Path(exp.resume_dir).resolve() != Path(run_dir).resolve():
                import shutil

                path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(exp.resume_dir) / "checkpoint.npz", path)  # continued here
            checkpoint = Checkpoint(path, every_s=exp.checkpoint_every_s or float("inf"),
                                    resume=exp.resume_dir is not None, config_hash=exp.config_hash)
        return fit(exp, progress=progress, checkpoint=checkpoint)

    def outputs(self, exp, results, run_dir: Path) -> Report:
        return outputs(exp, results, run_dir)


def outputs(exp, results, run_dir: Path) -> Report:
    import jax

    from runner import posterior
    from runner.inference.svi.program import KEY_DERIVATION
    from runner.inference.latents import discrete_outputs
    from runner.outputs import write_guide_draws, write_json, write_posterior

    svi = exp.inference
    finals = np.array([r.final_loss for r in results])
    best = int(np.nanargmin(finals)) if np.isfinite(finals).any() else 0
    result = results[best]
    diverged = not np.isfinite(result.final_loss)
    artifacts, metrics = write_fit(run_dir, exp, result, figures=not diverged)
    if diverged:  # every restart (of every replicate) diverged
        step = failure_step(result)
        trained, total = len(result.trained) * len(results), exp.restarts * len(results)
        return Report(scalars={k: v for k, v in metrics["scalars"].items() if np.isfinite(v)},
                      curves=metrics["curves"], curve_steps=metrics["steps"], artifacts=artifacts, line="",
                      key_derivation=KEY_DERIVATION,
                      result=result, results=results, tags={"failure_step": step},
                      failed=f"all trained restarts diverged ({trained} of {total} trained; loss NaN/inf "
                             f"from step {step}): lower optim.lr (now {svi.lr}) or check the data")
    scalars, curves = metrics["scalars"], metrics["curves"]
    children = []
    if len(results) > 1:  # the run is the parent of its replicates: their spread, best one's curves
        scalars = {"final_loss": float(finals.mean()), "final_loss_mean": float(finals.mean()),
                   "final_loss_std": float(finals.std()), "final_loss_min": float(finals.min()),
                   "best_replicate": best, "replicates": len(results)}
        children = replicate_children(exp, results, run_dir)
    latent_names = posterior.latent_sites(exp.model, exp.data)
    checks, tags, stop_words = diagnose(exp, result, latent_names, run_dir)
    scalars.update(checks)
    artifacts.append("diagnostics.json")
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
        draws = posterior.predictive_draws(exp.model, exp.data, exp.posterior_samples,
                                           jax.random.PRNGKey(exp.seed + 2**20),
                                           guide=svi.make_guide(exp.model, data, jax.random.PRNGKey(0)),
                                           params=result.params)
        artifacts += write_posterior(exp, draws, run_dir)
    else:
        artifacts += write_guide_draws(result.samples, latent_names, run_dir)
    artifacts += arviz_file(exp, draws, run_dir)
    line = (f"final_loss={scalars['final_loss']:.6g} best_restart={result.best}/{exp.restarts}"
            if len(results) == 1 else
            f"final_loss={scalars['final_loss']:.6g} replicates={len(results)} "
            f"std={scalars['final_loss_std']:.4g} best_replicate={best}")
    if stop_words:
        line += " " + stop_words
    return Report(scalars=scalars, curves=curves, curve_steps=metrics["steps"], artifacts=artifacts, line=line,
                  key_derivation=KEY_DERIVATION, result=result, results=results, children=children,
                  predictable=exp.data is not None, tags=tags)


def diagnose(exp, result, latent_names, run_dir: Path) -> tuple[dict, dict, str]:
    """Did it work? k-hat, restart agreement and early stopping of the selected replicate
    (runner/inference/diagnostics.py): (metrics, tags, words for the summary line); the
    per-restart figures go to diagnostics.json."""
    from runner.inference import diagnostics
    from runner.outputs import write_json

    metrics, tags = {}, {}
    for m, t in (diagnostics.psis(result), diagnostics.agreement(result, latent_names)):
        metrics.update(m)
        tags.update(t)
    m, t, words = diagnostics.stopping(result, exp.inference.steps)
    metrics.update(m)
    tags.update(t)

    def floats(x):
        return None if x is None else [float(v) if np.isfinite(v) else None for v in np.asarray(x, dtype=float)]

    write_json(run_dir / "diagnostics.json", {
        **metrics, **tags, "restarts": np.asarray(result.trained).tolist(),
        "final_losses": floats(result.final_losses), "loss_noise": floats(result.noise),
        "top_restarts": None if result.top is None else np.asarray(result.trained)[result.top].tolist(),
        "stop_steps": None if result.stopped is None else np.asarray(result.stopped).tolist()})
    return metrics, tags, words


def arviz_file(exp, draws: dict, run_dir: Path) -> list[str]:
    """inference_data.nc: one chain of the selected restart's guide draws (only its params leave
    the compiled fit), with the mock observations of posterior.samples."""
    from runner import inference_data, posterior

    observed = set(posterior.observed_sites(exp.model, exp.data)) if exp.data is not None else set()
    keep = {*posterior.latent_sites(exp.model, exp.data), *posterior.deterministic_sites(exp.model, exp.data)}
    predictive = {k: v for k, v in draws.items() if k in observed} if exp.posterior_samples else None
    return inference_data.write(exp, run_dir, {k: v for k, v in draws.items() if k in keep},
                                predictive=predictive or None)


def write_fit(run_dir: Path, exp, result, figures: bool = True) -> tuple[list[str], dict]:
    """params.json, metrics.json (the selected restart's curves) and, with `figures`, the loss
    plot and the model's own figure. Returns the artifact paths and the metrics."""
    from runner import figures
    from runner.outputs import to_lists, write_json, write_metrics

    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "params.json", to_lists(result.params))
    row = result.best_row
    scalars = scalar_metrics(result)
    curves = {"loss": result.losses[row].tolist(),
              **{f"grad_norm/{k}": v[row].tolist() for k, v in result.grad_norms.items()}}
    steps = result.steps.tolist()
    write_metrics(run_dir, scalars, curves, steps)
    files = ["config.yaml", "params.json", "metrics.json"]
    metrics = {"scalars": scalars, "curves": curves, "steps": steps}
    if not figures:
        return files, metrics
    model_png = f"plots/{exp.model.name}.png"
    drawn = [rel for rel, ok in [("plots/loss.png", figures.loss_plot(result, run_dir / "plots" / "loss.png")),
                                 (model_png, figures.model_plot(exp.model, result, exp.data, run_dir / model_png))] if ok]
    return [*files, *drawn], metrics


def replicate_children(exp, results, run_dir: Path) -> list[Child]:
    """One child run per replicate, with its own seed, curves and params.json."""
    children = []
    for i, r in enumerate(results):
        sub = run_dir / f"replicate_{i}"
        files, m = write_fit(sub, exp, r, figures=False)
        children.append(Child(name=f"replicate {i} (seed {exp.seed + i})", tags={"replicate": i, "seed": exp.seed + i},
                              params={"seed": exp.seed + i, "replicate": i}, scalars=m["scalars"],
                              curves=m["curves"], artifact_dir=sub, artifacts=files[1:], curve_steps=m["steps"]))
    return children


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
    step = int(result.failure_steps[result.best_row])
    return step if step < int(result.steps[-1]) + 1 else None


def minibatch_plates(model, data, batch: int) -> tuple[int, frozenset]:
    """(N, the plates over the data's N rows) for `data.batch_size=batch`, or one ConfigError
    line: the data must share N rows, the observations must sit in a plate of size N, and no
    latent site may (a guide's local parameters cannot follow a minibatch of them)."""
    import numpy as np

    from runner.posterior import model_sites

    arrays = [v for v in (data.values() if isinstance(data, dict) else [data]) if np.ndim(v) > 0] if data is not None else []
    if not arrays:
        raise ConfigError("data.batch_size needs data with rows: this model takes none")
    n = {np.shape(v)[0] for v in arrays}
    if len(n) != 1:
        raise ConfigError(f"data.batch_size needs data arrays with the same number of rows, got {sorted(n)}")
    (n,) = n
    if not 1 <= batch < n:
        raise ConfigError(f"data.batch_size must be between 1 and the number of rows - 1 ({n - 1}), got {batch}")
    sites = model_sites(model, data)
    plates = frozenset(f.name for s in sites.values() if s["type"] == "sample" and s["is_observed"]
                       for f in s["cond_indep_stack"] if f.size == n)
    if not plates:
        raise ConfigError(f"data.batch_size needs model '{model.name}' to observe its data in a "
                          f"numpyro.plate of the data's {n} rows")
    local = sorted(name for name, s in sites.items() if s["type"] == "sample" and not s["is_observed"]
                   and not (s.get("infer") or {}).get("enumerate")
                   and any(f.name in plates for f in s["cond_indep_stack"]))
    if local:
        raise ConfigError(f"data.batch_size: model '{model.name}' has latent sites in the data's plate {local}; "
                          "a guide cannot follow a minibatch of them (fit without data.batch_size)")
    return n, plates


def _base(fn):
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn


def check_guide(svi: SVI, model, data) -> tuple[bool, bool]:
    """Trace the guide and the model once: the guide's sample sites must be the model's latent
    sites (NumPyro only warns). Returns (deterministic, continuous): the objective is
    deterministic when every guide site is a Delta and every other latent site is enumerated; the
    guide is continuous (a density over every latent site, so PSIS applies) when the model
    enumerates nothing and no guide site is a point mass, or its point masses are transforms
    of auxiliary densities (an AutoContinuous guide, seed 004's MixtureGeneral guide: their
    Deltas carry the transform's log-Jacobian, which the ELBO relies on too)."""
    import jax
    import numpyro.distributions as dist
    from numpyro import handlers
    from numpyro.infer.autoguide import AutoContinuous

    from runner.guides.auto import is_enumerated

    traces = {}

    def probe(data):  # traced abstractly by eval_shape: nothing is compiled or computed
        args = () if data is None else (data,)
        guide = svi.make_guide(model, data, jax.random.PRNGKey(0))
        if model.enumerated and isinstance(guide, AutoContinuous):
            raise ConfigError(
                f"this guide cannot be used with model '{model.name}': NumPyro's joint "
                "(AutoContinuous) guides fail under TraceEnum_ELBO in plated models; "
                "use guide=autodelta, autonormal or manual")
        with handlers.block():
            traces["guide"] = handlers.trace(handlers.seed(guide, 0)).get_trace(*args)
            replayed = handlers.replay(handlers.seed(model, 1), trace=traces["guide"])
            traces["model"] = handlers.trace(replayed).get_trace(*args)
        return 0

    jax.eval_shape(probe, data)
    guide_tr, model_tr = traces["guide"], traces["model"]

    def latent(tr):
        return {n: s for n, s in tr.items() if s["type"] == "sample" and not s["is_observed"]
                and not (s.get("infer") or {}).get("is_auxiliary")}

    model_latent, guide_latent = latent(model_tr), latent(guide_tr)
    extra = sorted(set(guide_latent) - set(model_latent))
    if extra:
        raise ConfigError(f"guide samples sites the model does not have: {extra}")
    missing = sorted(n for n, s in model_latent.items() if n not in guide_latent and not is_enumerated(s))
    if missing:
        raise ConfigError(f"guide does not cover the model's latent sites {missing}")
    sampled = [s for s in guide_tr.values() if s["type"] == "sample" and not s["is_observed"] and not is_enumerated(s)]
    points = [isinstance(_base(s["fn"]), dist.Delta) for s in sampled]
    deterministic = all(points)
    aux_density = any(not p for s, p in zip(sampled, points) if (s.get("infer") or {}).get("is_auxiliary"))
    continuous = not deterministic and not model.enumerated and (not any(points) or aux_density)
    return deterministic, continuous
