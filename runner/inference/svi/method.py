"""inference=svi: stochastic variational inference. The guide, loss and optimizer come from their
config groups; `restarts` initialisations (and `replicates` seeds) train side by side in one
compiled program (runner/inference/svi/program.py); `select` keeps the best by initial or final loss."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from runner import schema
from runner.errors import ConfigError
from runner.inference.base import START_REMEDIES, Child, FitContext, FitOutput, Method


@dataclass(frozen=True)
class Stop:
    """stop.rtol / stop.patience / stop.window: a restart stops once its smoothed loss (an
    exponential moving average over about `window` steps) has not fallen by `rtol` (relative)
    for `patience` steps. (The ranges are the top-level keys', runner/schema.py.)"""
    rtol: float | None = schema.setting(None, schema.RUN["stop.rtol"].check)
    patience: int = schema.setting(1000, schema.RUN["stop.patience"].check)
    window: int = schema.setting(500, schema.RUN["stop.window"].check)

    @property
    def decay(self) -> float:
        return 1.0 - 1.0 / self.window


@dataclass
class SVI(Method):
    """conf/inference/svi.yaml. The settings are the top-level keys a user types (steps=2000,
    select=final, stop.rtol=1e-4, diagnostics.psis_draws=..., data.batch_size=...), which the YAML
    reads by interpolation (inference.steps=... works too); their ranges are runner/schema.py's,
    checked before the method is built. `prepare` builds the guide, loss and optimizer from
    their groups and refuses what cannot work with the model and data."""
    name = "svi"
    checkpoints = True  # its state is written between chunks (checkpoint.every_s) and continued (resume=)
    fuses = True  # a fused sweep's group is one program (fit_fused)
    groups = ("model", "guide", "loss", "optim", "data", "inference")
    steps: int = schema.setting(1000, schema.RUN["steps"].check)
    select: str = schema.setting("final", schema.RUN["select"].check)
    replicates: int = schema.setting(1, schema.RUN["replicates"].check)
    stop: Stop | None = None  # early stopping (the `stop` block; None while stop.rtol is null: every step trained)
    psis_draws: int = schema.setting(1000, schema.RUN["diagnostics.psis_draws"].check)  # guide draws for k-hat; 0: none
    batch_size: int | None = schema.setting(None, schema.RUN["data.batch_size"].check)  # rows per step (None: all)
    # the fit keeps its curves at this many steps at most (tracking.max_points_per_curve)
    curve_points: int | None = schema.setting(2000, schema.TRACKING["tracking.max_points_per_curve"])
    # built by prepare() from the guide, loss and optim groups, the model and the data
    guide_builder: Callable = field(default=None, init=False)  # (model, init_values) -> guide
    loss: Any = field(default=None, init=False)  # numpyro ELBO
    optimizer: Any = field(default=None, init=False)  # runner.optim.OptaxOptimizer | runner.optim.LBFGS
    lr: Any = field(default=None, init=False)  # the optimizer's learning rate, for the hint when every restart diverges
    deterministic: bool = field(default=False, init=False)  # every guide site a Delta, the rest enumerated: exact
    continuous: bool = field(default=False, init=False)  # the guide is a density over every latent site (k-hat applies)
    rows: int = field(default=0, init=False)  # the data's rows (with batch_size)
    data_plates: frozenset = field(default=frozenset(), init=False)  # the plates over the data's rows (with batch_size)

    def __post_init__(self):
        if isinstance(self.stop, Mapping):  # the YAML's stop block (Hydra gives a mapping), checked already
            block = dict(self.stop)
            self.stop = None if block.get("rtol") is None else Stop(**{**block, "rtol": float(block["rtol"])})

    def prepare(self, cfg, model, data) -> None:
        from numpyro.infer import TraceEnum_ELBO

        from runner.checks import instantiate

        self.guide_builder = instantiate(cfg.guide, "guide")
        self.loss = instantiate(cfg.loss, "loss")
        self.optimizer = instantiate(cfg.optim, "optim")
        self.lr = cfg.optim.get("lr")
        if model.enumerated and not isinstance(self.loss, TraceEnum_ELBO):
            raise ConfigError(f"model '{model.name}' has enumerated discrete sites: use loss=traceenum")
        from runner import schema
        from runner.inference import program_cache

        # a config checked before (its programs kept: runner/inference/program_cache.py) is not traced again
        self.deterministic, self.continuous = program_cache.kept_fact(
            schema.run_settings(cfg)["jax.cache_dir"], cfg, model, data, "check_guide",
            lambda: list(check_guide(self, model, data)))
        if self.stop is not None and self.optimizer.needs_deterministic:
            raise ConfigError("stop.rtol applies to the step optimizers (adam, sgd, ...); optim=lbfgs stops by its own tolerance")
        if self.optimizer.needs_deterministic and not self.deterministic:
            raise ConfigError("optim=lbfgs needs a deterministic objective (e.g. guide=autodelta); "
                              "this guide samples, so use a stochastic optimizer such as optim=adam")
        if self.batch_size is not None:
            if getattr(model, "concrete", False):
                raise ConfigError(f"model '{model.name}' computes with its data's values (NumPy on the data), so its "
                                  "data are fixed in the program: drop data.batch_size (or subsample with numpyro.plate)")
            self.rows, self.data_plates = minibatch_plates(model, data, self.batch_size)
            if self.optimizer.needs_deterministic:
                raise ConfigError("optim=lbfgs needs the full data at every step: drop data.batch_size")

    def prepare_like(self, cfg, model, data, other: "SVI") -> None:
        """The guide, loss and checks of `other` (the same model, data, guide and loss: a fused
        sweep's group); this config's own optimizer, whose numbers may differ."""
        from runner.checks import instantiate

        self.guide_builder, self.loss = other.guide_builder, other.loss
        self.deterministic, self.continuous = other.deterministic, other.continuous
        self.rows, self.data_plates = other.rows, other.data_plates
        self.optimizer = instantiate(cfg.optim, "optim")
        self.lr = cfg.optim.get("lr")

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

    def fit(self, exp, context: FitContext = FitContext()) -> FitOutput:
        """All restarts and replicates in one compiled program; with a checkpoint path, its
        state written between chunks (and continued from context.resume, bit for bit)."""
        from runner.inference.svi.loop import Checkpoint
        from runner.inference.svi.program import fit
        from runner.progress import Progress

        checkpoint = None
        if context.checkpoint is not None:
            path = Path(context.checkpoint)
            if context.resume is not None and Path(context.resume).resolve() != path.resolve():
                import shutil

                path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(context.resume, path)  # continued here
            checkpoint = Checkpoint(path, every_s=exp.checkpoint_every_s or float("inf"),
                                    resume=context.resume is not None, config_hash=exp.config_hash)
        progress = None if context.progress is None else Progress(self.steps, label=context.progress)
        return output(exp, fit(exp, progress=progress, checkpoint=checkpoint, safe_point=context.safe_point))

    def fit_fused(self, exps: list, plan) -> list[FitOutput]:
        """The experiments as one compiled program (runner/inference/svi/fused.py): their seeds,
        optimizer numbers and early stopping per row; `plan` (runner.fusion.Plan): the optimizer
        numbers that differ, the pruning, the memory the program may use, a progress label."""
        from runner.inference.svi import fused

        per_job, pruned_at = fused.fit(exps, plan)
        return fused_outputs(exps, per_job, pruned_at)

    def simulation_fit(self, exp) -> Callable | None:
        """The whole fit (prepare, every step, finish) of one data set as a pure function
        (root, data) -> the selected restart's guide draws: a calibration vmaps it over simulated
        data sets (runner/check/sbc.py). No PSIS draws: only the guide's draws are used. None for a
        model whose data are fixed in the program (NumPy on its data)."""
        import dataclasses

        from runner.inference.svi.program import fit_program

        if getattr(exp.model, "concrete", False):
            return None
        program = dataclasses.replace(fit_program(exp), psis_draws=0)
        steps = self.steps

        def fit_one(root, data):
            roots = root[None]
            state, fixed = program.prepare(roots, data)
            state, _ = program.advance(state, fixed, data, 0, steps)
            out = program.finish(state, fixed, roots, data)
            return {k: v[0] for k, v in out["samples"].items()}

        return fit_one

    def extras(self, exp, out: FitOutput, run_dir: Path) -> list[str]:
        """Every restart's loss curve (plots/loss.png) and the per-restart diagnostics."""
        from runner import figures
        from runner.outputs import write_json

        files = [write_json(run_dir / "diagnostics.json", out.extras.diagnostics)]
        if figures.loss_plot(figures.losses_of(out.extras.result), run_dir / "plots" / "loss.png"):
            files.append("plots/loss.png")
        return files


@dataclass
class Fitted:
    """SVI's own result (FitOutput.extras): one FitResult per replicate, the selected one, and
    the per-restart diagnostics (diagnostics.json)."""
    results: list
    best: int
    diagnostics: dict

    @property
    def result(self):
        return self.results[self.best]


def output(exp, results) -> FitOutput:
    """The fit as every method's: the selected replicate's restart (its curves, guide params and
    guide draws), the diagnostics, the replicates' spread and their child runs."""
    from runner import posterior
    from runner.inference.svi.program import KEY_DERIVATION

    finals = np.array([r.final_loss for r in results])
    best = int(np.nanargmin(finals)) if np.isfinite(finals).any() else 0
    result = results[best]
    scalars, (curves, steps) = scalar_metrics(result), curves_of(result)
    if not np.isfinite(result.final_loss):  # every restart (of every replicate) diverged
        return diverged(exp, results, best, scalars)
    children = []
    if len(results) > 1:  # the run is the parent of its replicates: their spread, best one's curves
        scalars = {"final_loss": float(finals.mean()), "final_loss_mean": float(finals.mean()),
                   "final_loss_std": float(finals.std()), "final_loss_min": float(finals.min()),
                   "best_replicate": best, "replicates": len(results)}
        children = replicate_children(exp, results)
    latent_names = posterior.latent_sites(exp.model, exp.data)
    checks, tags, stop_words, diagnostics = diagnose(exp, result, latent_names)
    # what final_loss is: a Delta guide (autodelta, autolaplace's fit) minimises the negative log joint
    # (the MAP objective), any other guide the negative ELBO: a sweep ranks each apart (runner.sweep)
    tags["objective"] = "map" if exp.inference.deterministic else "elbo"
    scalars.update(checks)
    latents = posterior.point_estimate(result.samples, latent_names)
    assignments = None
    if "assignment_probs" in result.params:  # the GMM full guide: its learned q(assignment)
        from runner.inference import program_cache

        assignments = {**posterior.assignments(exp.model, latents, exp.data, kept=program_cache.for_experiment(exp)),
                       "assignment_probs": result.params["assignment_probs"]}
    line = (f"final_loss={scalars['final_loss']:.6g} best_restart={result.best}/{exp.restarts}"
            if len(results) == 1 else
            f"final_loss={scalars['final_loss']:.6g} (the mean of {len(results)} replicates, "
            f"std {scalars['final_loss_std']:.4g}) best_replicate={best}")
    return FitOutput(method="svi", scalars=scalars, curves=curves, curve_steps=steps, params=result.params,
                     draws={k: np.asarray(v)[None] for k, v in result.samples.items()}, latents=latents,
                     assignments=assignments, draw=guide_sampler(exp, result.params),
                     line=f"{line} {stop_words}".rstrip(), key_derivation=KEY_DERIVATION, tags=tags,
                     children=children, extras=Fitted(results, best, diagnostics))


def fused_outputs(exps, per_job: list, pruned_at: np.ndarray | None) -> list:
    """Each job's FitOutput, as its own fit would give it; a pruned job's says so (tags
    `pruned`, `pruned_at_step`, and its summary line)."""
    outs = []
    for j, (exp, results) in enumerate(zip(exps, per_job)):
        out = output(exp, results)
        if pruned_at is not None and pruned_at[j] < exp.inference.steps:
            step = int(pruned_at[j])
            out.tags = {**out.tags, "pruned": "yes", "pruned_at_step": step}
            out.scalars = {**out.scalars, "pruned_at_step": step}
            out.line = f"{out.line} pruned at step {step}/{exp.inference.steps}".strip()
        outs.append(out)
    return outs


def diverged(exp, results, best: int, scalars: dict) -> FitOutput:
    """Every trained restart diverged: the run ends FAILED with what was finite, and says where."""
    from runner.inference.svi.program import KEY_DERIVATION

    result = results[best]
    step = failure_step(result)
    trained, total = len(result.trained) * len(results), exp.restarts * len(results)
    curves, steps = curves_of(result)
    why = (f"all trained restarts diverged ({trained} of {total} trained; loss NaN/inf from step {step}): "
           f"lower optim.lr (now {exp.inference.lr}) or check the data")
    if step == 0:  # before any update: the model's log density at the guide's initial values, not the rate
        why = (f"model '{exp.model.name}' cannot start inference=svi: its loss is NaN or infinite at the first "
               f"step of every restart ({trained} of {total} trained); {START_REMEDIES}")
    return FitOutput(method="svi", scalars=scalars, curves=curves, curve_steps=steps, params=result.params,
                     line="", key_derivation=KEY_DERIVATION, tags={"failure_step": step}, failed=why,
                     extras=Fitted(results, best, {}))


def guide_sampler(exp, params: dict):
    """(num, key) -> num draws of the latent sites from the fitted guide (posterior.samples)."""
    def draw(num: int, key) -> dict:
        import jax
        import jax.numpy as jnp

        from runner.inference.svi.program import guide_draws

        data = None if exp.data is None else jax.tree.map(jnp.asarray, exp.data)
        guide = exp.inference.make_guide(exp.model, data, jax.random.PRNGKey(0))
        fitted = {k: jnp.asarray(v) for k, v in params.items()}
        return guide_draws(guide, fitted, key, () if data is None else (data,), num)

    return draw


def diagnose(exp, result, latent_names) -> tuple[dict, dict, str, dict]:
    """Did it work? k-hat, restart agreement and early stopping of the selected replicate
    (runner/inference/diagnostics.py): (metrics, tags, words for the summary line, the
    per-restart figures of diagnostics.json)."""
    from runner.inference import diagnostics

    metrics, tags = {}, {}
    for m, t in (diagnostics.psis(result), diagnostics.agreement(result, latent_names)):
        metrics.update(m)
        tags.update(t)
    m, t, words = diagnostics.stopping(result, exp.inference.steps)
    metrics.update(m)
    tags.update(t)

    def floats(x):
        return None if x is None else [float(v) if np.isfinite(v) else None for v in np.asarray(x, dtype=float)]

    return metrics, tags, words, {
        **metrics, **tags, "restarts": np.asarray(result.trained).tolist(),
        "final_losses": floats(result.final_losses), "loss_noise": floats(result.noise),
        "top_restarts": None if result.top is None else np.asarray(result.trained)[result.top].tolist(),
        "stop_steps": None if result.stopped is None else np.asarray(result.stopped).tolist()}


def curves_of(result) -> tuple[dict, list]:
    """The selected restart's curves (loss, gradient norms) and their steps."""
    row = result.best_row
    return ({"loss": result.losses[row].tolist(),
             **{f"grad_norm/{k}": v[row].tolist() for k, v in result.grad_norms.items()}}, result.steps.tolist())


def replicate_children(exp, results) -> list[Child]:
    """One child run per replicate, with its own seed, curves and params.json."""
    children = []
    for i, r in enumerate(results):
        curves, steps = curves_of(r)
        children.append(Child(name=f"replicate {i} (seed {exp.seed + i})", folder=f"replicate_{i}",
                              tags={"replicate": i, "seed": exp.seed + i}, params={"seed": exp.seed + i, "replicate": i},
                              scalars=scalar_metrics(r), curves=curves, curve_steps=steps, fitted=r.params))
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
