"""Several SVI experiments as one compiled program: a fused sweep's jobs (hydra/launcher=vectorized,
runner/fusion.py), run the way replicates are. Jobs that differ only in their seed, their
optimizer's numbers (learning rate, betas, a schedule's numbers) and their early-stopping settings
share the model, the guide, the data and every shape: each job is a block of rows on the program's
leading axis (its replicates x its trained restarts), with its own root key PRNGKey(seed), and
the numbers that differ are given per row:

- the optimizer is built inside the step from the optim config with that row's numbers (traced
  values where the job alone has constants: optax transforms take either), so its state has the
  same structure for every row;
- early stopping's rtol, patience and window are (B,) arrays where a job alone has scalars.

A job's numbers are those of the same job run alone up to float rounding: a traced learning rate
and a constant one are the same float32 number, but XLA may fold and fuse a constant differently,
so the last bits of a step can differ, and an optimizer carries that difference on (see the
tolerance in tests/e2e/test_fused.py).

Pruning (`Halving`, successive halving: Jamieson and Talwalkar 2016; the rungs of ASHA, Li et al.
2020): at rungs r, r/keep, r/keep^2, ... steps, the jobs still training are ranked by their loss
(the last loss of a deterministic objective, the smoothed loss of a stochastic one) and all but the
best `keep` fraction stop: a masked update, as early stopping's. A pruned job's final loss is
its loss at the params it stopped with.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class Varying:
    """The optimizer's numbers that differ between the jobs: the optim config (resolved, a plain
    dict) and, per dotted path inside it, each row's number."""
    node: dict
    values: dict  # path -> (B,) float array

    def rows(self) -> dict:
        import jax.numpy as jnp

        return {path: jnp.asarray(v) for path, v in self.values.items()}

    def optimizer(self, numbers: dict):
        """The optimizer of one row: the optim config with that row's numbers (traced), built as
        the config builds it (its `_target_`: runner.optim's factories)."""
        from runner.checks import instantiate

        node = _with(self.node, numbers)
        return instantiate(node, "optim")


def _with(node: dict, numbers: dict) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in node.items()}
    for path, value in numbers.items():
        parts, at = path.split("."), out
        for part in parts[:-1]:
            at[part] = dict(at[part])
            at = at[part]
        at[parts[-1]] = value
    return out


@dataclass(frozen=True, eq=False)
class RowStop:
    """Early stopping's settings per row (runner.inference.svi.method.Stop's fields as (B,) arrays)."""
    rtol: Any
    patience: Any
    window: Any

    @property
    def decay(self):
        return 1.0 - 1.0 / self.window


@dataclass(frozen=True, eq=False)
class Rows:
    """A fused program's settings per row (runner.inference.svi.program.make_programs)."""
    stop: RowStop | None = None
    varying: Varying | None = None
    model: dict | None = None  # model attribute -> (J,) each job's number (the model's float settings)


@dataclass
class Halving:
    """Successive halving between chunks (see the module docstring). `rows` rows per job, jobs in
    blocks; `pruned_at[j]`: the step at which job j stopped (`steps` if it was not pruned)."""
    rungs: tuple
    keep: float
    jobs: int
    rows: int
    steps: int
    deterministic: bool
    pruned_at: np.ndarray = field(default=None)

    def __post_init__(self):
        self.pruned_at = np.full(self.jobs, self.steps, dtype=int)

    def __call__(self, state, step: int):
        import jax.numpy as jnp

        stop_at = np.asarray(state.stop.stop_at)
        score = np.asarray(state.tail.last if self.deterministic else state.stop.ema, dtype=float)
        score = np.where(np.isnan(score), np.inf, score).reshape(self.jobs, self.rows).min(axis=1)
        running = (stop_at == self.steps).reshape(self.jobs, self.rows).any(axis=1)
        active = np.flatnonzero(running)
        kept = max(1, math.ceil(self.keep * len(active)))
        pruned = active[np.argsort(score[active], kind="stable")[kept:]]
        if not len(pruned):
            return state
        self.pruned_at[pruned] = step
        rows = np.repeat(np.isin(np.arange(self.jobs), pruned), self.rows)
        new = np.where(rows & (stop_at == self.steps), step, stop_at).astype(stop_at.dtype)
        return state._replace(stop=state.stop._replace(stop_at=jnp.asarray(new)))

    @property
    def steps_saved(self) -> int:
        return int((self.steps - self.pruned_at).sum())


def rungs(steps: int, first: float, keep: float) -> tuple:
    """The steps at which successive halving prunes: round(steps*first) (at least 1), then each
    1/keep times the last, while below steps."""
    out, at = [], max(1, round(steps * first))
    while at < steps and len(out) < 64:
        out.append(at)
        at = max(at + 1, round(at / keep))
    return tuple(out)


def rows_of(exps, varying: dict, optim_node: dict, prune: bool, first_rung: int | None,
            model: dict | None = None) -> Rows:
    """The per-row settings of `exps` (one block of rows per experiment): `varying` the optimizer's
    numbers that differ (path -> each job's value). With pruning and no early stopping, a stop
    block that never stops by itself (patience past the last step) gives the masked update and a
    smoothed loss over about a quarter of the first rung."""
    import jax

    exp = exps[0]
    method = exp.inference
    per_job = rows_per_job(exp)
    dtype = np.float64 if jax.config.jax_enable_x64 else np.float32

    def per_row(values, kind):
        return np.repeat(np.asarray(values, dtype=kind), per_job)

    stops = [e.inference.stop for e in exps]
    stop = None
    if stops[0] is not None:
        stop = RowStop(rtol=per_row([s.rtol for s in stops], dtype), patience=per_row([s.patience for s in stops], np.int32),
                    window=per_row([s.window for s in stops], np.int32))
    elif prune:
        window = max(1, (first_rung or method.steps) // 4)
        stop = RowStop(rtol=per_row([0.0] * len(exps), dtype), patience=per_row([method.steps + 1] * len(exps), np.int32),
                    window=per_row([window] * len(exps), np.int32))
    moving = None
    if varying:
        moving = Varying(optim_node, {path: per_row(values, dtype) for path, values in varying.items()})
    numbers = {name: np.asarray(values, dtype=dtype) for name, values in (model or {}).items()} or None
    return Rows(stop=stop, varying=moving, model=numbers)


def rows_per_job(exp) -> int:
    """The trained rows of one job: its replicates x its trained restarts (1 with select=initial)."""
    return exp.inference.replicates * (1 if exp.inference.select == "initial" else exp.restarts)


@dataclass(frozen=True)
class Pruning:
    """hydra.launcher.prune=halving: the fraction kept at each rung and the first rung (a fraction
    of the steps)."""
    keep: float = 0.5
    first: float = 0.125


def fit(exps, plan) -> tuple[list, np.ndarray | None]:
    """One compiled fit of every experiment in `exps` (same model class, guide, data, shapes): each
    one's list of FitResults (one per replicate), and the step at which each was pruned (None
    without pruning). `plan` (runner.fusion.Plan): the optimizer's and the model's numbers that
    differ, the pruning, the memory the program may plan to use, the progress line's label."""
    from runner.inference.svi import program as fused_program
    from runner.progress import Progress

    exp = exps[0]
    n = exp.inference.replicates
    steps = exp.inference.steps
    pruning, available = plan.pruning, plan.available
    progress = None if plan.progress is None else Progress(steps, label=plan.progress)
    model = model_numbers(exps, plan.model)
    at = rungs(steps, pruning.first, pruning.keep) if pruning else ()
    rows = rows_of(exps, plan.varying, plan.optim_node, bool(at), at[0] if at else None, model)
    programs = fused_program.make_programs(exp, rows)
    programs.available = available
    pruner = None
    if at:
        pruner = programs.pruner = Halving(at, pruning.keep, len(exps), rows_per_job(exp), steps,
                                           exp.inference.deterministic)
    results = fused_program.run_rows(exps, programs, progress)
    per_job = [results[j * n:(j + 1) * n] for j in range(len(exps))]
    for job, e in zip(per_job, exps):
        if job[0].stopped is not None:
            if e.inference.stop is None:  # the stop block was pruning's own: no early-stopping figures
                for r in job:
                    r.stopped = None
            else:
                fused_program.trim_stopped(job, programs.curve_steps)
    if pruner is not None:
        for j, job in enumerate(per_job):
            if pruner.pruned_at[j] < steps:
                trim_at(job, int(pruner.pruned_at[j]))
    return per_job, None if pruner is None else pruner.pruned_at


def model_numbers(exps, keys: list) -> dict | None:
    """The model's float settings that differ between the jobs (model.<key> in their configs), as
    attributes of the model object: each job's value, read from its own model. A setting that is
    not a float attribute of that name, or that changed other attributes too (a model deriving
    numbers from it when it is built), or a fit the per-job model cannot follow (minibatches; a
    Laplace guide, whose draws evaluate the model) is not fused (ValueError: the jobs run one by one)."""
    if not keys:
        return None
    from numpyro.infer.autoguide import AutoLaplaceApproximation

    names = [key.split(".", 1)[1] for key in keys]
    template = vars(exps[0].model)
    for exp in exps:
        mine = vars(exp.model)
        changed = {k for k in set(mine) | set(template) if not _same(mine.get(k), template.get(k))}
        if changed - set(names) or any(not isinstance(mine.get(n), float) for n in names):
            raise ValueError(f"model.{', model.'.join(names)}: not only float attributes of the model of that "
                             f"name differ between the jobs ({sorted(changed) or 'none'})")
    method = exps[0].inference
    if method.batch_size is not None or method.optimizer.needs_deterministic:
        raise ValueError("the model's numbers vary and data.batch_size or optim=lbfgs is set")
    if isinstance(method.make_guide(exps[0].model, exps[0].data, _key()), AutoLaplaceApproximation):
        raise ValueError("the model's numbers vary and the Laplace guide's draws evaluate the model")
    return {n: [getattr(e.model, n) for e in exps] for n in names}


def _same(a, b) -> bool:
    try:
        return bool(np.array_equal(a, b)) if isinstance(a, np.ndarray) or isinstance(b, np.ndarray) else bool(a == b)
    except Exception:  # values that do not compare (a callable, a jax array of another shape): differ
        return a is b


def _key():
    import jax

    return jax.random.PRNGKey(0)


def trim_at(results: list, step: int) -> None:
    """A pruned job's curves end at the step it stopped."""
    for r in results:
        keep = np.asarray(r.steps) < step
        r.steps = r.steps[keep]
        r.losses = r.losses[:, keep]
        r.grad_norms = {k: g[:, keep] for k, g in r.grad_norms.items()}
