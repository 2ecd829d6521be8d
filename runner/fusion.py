"""A sweep as few compiled programs (hydra/launcher=vectorized, hydra_plugins/runner_vectorized):
the launcher's jobs grouped by what their fit compiles to, each group fitted as one program by its
inference method (`Method.fit_fused`; SVI: runner/inference/svi/fused.py), then every job run as a
job, one by one as Hydra's basic launcher runs them (its own folder, child run, params, tags,
curves, files, status, and the value a sweeper gets), with its fit already done.

Jobs fuse when their configs differ only in numbers that keep the program's shapes: the seed,
the optimizer's float numbers (optim.lr, optim.b1, a schedule's alpha, ...), early stopping's
settings (stop.rtol, stop.patience, stop.window) and settings that act after the fit (tracking,
posterior.samples, progress, checkpoints). Anything else (another model, guide, loss, data,
steps, restarts, method, an integer of the optimizer) makes another group; a group of one, or
a method that fits one experiment at a time (NUTS, EM), runs its jobs one by one.

A group larger than the memory budget (runner/inference/budget.py) is split in halves until each
part fits, before anything is allocated. A group that cannot be fused after all (its program
fails to build) says why and runs one by one.
"""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

#: top-level keys that do not act on the fit's program (read after it, or by the job); the
#: tracking group's curve length does (tracking.max_points_per_curve: the curves' shape)
AFTER_FIT = ("hydra", "tracking", "progress", "timing", "checkpoint", "rerun", "posterior", "hints", "resume")
IN_FIT = {"tracking": ("max_points_per_curve",)}
#: a fused number's place in a job's signature
NUMBER = "<fused number>"


@dataclass
class Group:
    """Jobs (their indices in the launch) fitted by one program, or run one by one (`alone`: why)."""
    jobs: list
    numbers: list = field(default_factory=list)  # [{dotted key: value}] per job: the fused numbers
    alone: str | None = None

    @property
    def varies(self) -> list:
        """The keys whose values differ between the jobs."""
        keys = sorted({k for n in self.numbers for k in n})
        return [k for k in keys if len({json.dumps(n.get(k)) for n in self.numbers}) > 1]


@dataclass(frozen=True)
class Plan:
    """What a method's `fit_fused` gets besides the experiments."""
    varying: dict  # optim key (inside the optim node, e.g. "lr", "schedule.alpha") -> each job's value
    optim_node: dict | None  # the optim config, resolved (each row's optimizer is built from it)
    model: list = field(default_factory=list)  # the model's settings that differ ("model.prior_loc_scale")
    pruning: Any = None  # runner.inference.svi.fused.Pruning, or None
    available: int | None = None  # bytes a program may plan to use (None: what the machine has free)
    progress: str | None = None  # the progress line's label, None: no progress line


@dataclass(frozen=True)
class Prefit:
    """A job's fit, done in its group's program: the experiment built from its config and its
    output; `ahead`: its files, written while an earlier job was logged (`Ahead`)."""
    config_hash: str
    experiment: Any
    output: Any
    ahead: Any = None


class Ahead:
    """A fused job's run directory files (runner.outputs.write), written ahead of its turn in a
    folder of their own while the main thread waits on the tracking worker for an earlier job
    (runner.background.when_idle), and moved into the job's folder when the job reaches its
    outputs: the same files, each core busy. Never taken (a job skipped as a finished twin, an
    interrupted sweep): the launcher deletes the folder. An error is raised where the job takes
    its files, as writing them there would have raised it."""

    def __init__(self, exp, out, folder):
        self.exp, self.out, self.folder = exp, out, folder
        self.written = self.error = None
        self.done = False

    def write(self) -> None:
        if self.done:
            return
        self.done = True
        from runner import outputs

        try:
            self.written = outputs.write(self.exp, self.out, self.folder)
        except Exception as e:  # raised at the job's outputs, in its run
            self.error = e

    def when_idle(self) -> None:
        """Written now, while an earlier job waits, only where that changes nothing: not once a
        signal came (the command stops at its next safe point), not under another float width
        (jax.x64: the job's own run sets its width; its files are then written in its turn)."""
        import jax

        from runner.lifecycle import SIGNALS

        if SIGNALS.code or bool(jax.config.jax_enable_x64) != bool(self.exp.x64):
            return
        self.write()

    def into(self, run_dir):
        """The Written of runner.outputs.write, its files now in `run_dir` (written there, in its
        turn, when they were not written ahead)."""
        import os
        import shutil

        from runner import outputs

        if not self.done:
            self.done = True
            return outputs.write(self.exp, self.out, run_dir)
        if self.error is not None:
            raise self.error
        if not self.folder.is_dir():  # gone (deleted by hand): written again, where they belong
            return outputs.write(self.exp, self.out, run_dir)
        for root, _, names in os.walk(self.folder):
            target = run_dir / os.path.relpath(root, self.folder)
            target.mkdir(parents=True, exist_ok=True)
            for name in names:
                os.replace(os.path.join(root, name), target / name)
        shutil.rmtree(self.folder, ignore_errors=True)
        return self.written


def write_ahead(fits: dict, root) -> None:
    """Each fused job's files queued to be written ahead (`Ahead`), in job order, under `root`."""
    from pathlib import Path

    from runner import background

    for i, prefit in sorted(fits.items()):
        ahead = Ahead(prefit.experiment, prefit.output, Path(root) / str(i))
        fits[i] = Prefit(prefit.config_hash, prefit.experiment, prefit.output, ahead)
        background.when_idle(ahead.when_idle)


def signature(cfg) -> tuple[str, dict]:
    """(what the job's fit compiles to, as text; its fused numbers by dotted key)."""
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(cfg, resolve=True)
    for key in AFTER_FIT:
        value = node.pop(key, None)
        kept = {k: value[k] for k in IN_FIT.get(key, ()) if isinstance(value, dict) and k in value}
        if kept:
            node[key] = kept
    numbers = {"seed": node.pop("seed", None)}

    def floats(tree, prefix):
        for key, value in list(tree.items()):
            if isinstance(value, dict):
                floats(value, f"{prefix}.{key}")
            elif isinstance(value, float):
                numbers[f"{prefix}.{key}"] = value
                tree[key] = NUMBER

    if isinstance(node.get("optim"), dict):
        floats(node["optim"], "optim")
    model = node.get("model")
    if isinstance(model, dict):  # the model's own float settings (prior scales): attributes per row
        for key, value in list(model.items()):
            if isinstance(value, float):
                numbers[f"model.{key}"] = value
                model[key] = NUMBER
    inference = node.get("inference") if isinstance(node.get("inference"), dict) else {}
    for at, stop in (("stop", node.get("stop")), (None, inference.get("stop"))):  # the method reads it too
        if isinstance(stop, dict) and stop.get("rtol") is not None:
            for key in ("rtol", "patience", "window"):
                if at:
                    numbers[f"{at}.{key}"] = stop.get(key)
                stop[key] = NUMBER
    return json.dumps(node, sort_keys=True, default=str), numbers


def finished_before(cfgs: list, sweep_dir) -> frozenset:
    """The launch's jobs (indices) that a run FINISHED under the same sweep's parent makes
    redundant (the sweep run again, a search's repeated trial): their own runs skip them
    (runner.app.start: job.skip), so they are fitted with no group. One read of the parent's
    children per tracking config; a job is looked up by its config hash only when the parent has
    a finished child. What fails here is left to the job's own run (which says it)."""
    import logging

    from omegaconf import OmegaConf

    from runner import identity, tracking
    from runner.job import read_sweep

    parent = (read_sweep(sweep_dir) or {}).get("parent_run_id")
    done, hashes = set(), {}
    for i, cfg in enumerate(cfgs if parent else []):
        try:
            if cfg.get("rerun"):
                continue
            key = OmegaConf.to_yaml(cfg.tracking)
            if key not in hashes:
                children = tracking.from_config(cfg.tracking).children(parent, curves=0) or []
                hashes[key] = {c.get("config_hash") for c in children if c["status"] == "FINISHED"} - {None}
            if hashes[key] and identity.config_hash(cfg) in hashes[key]:
                done.add(i)
        except Exception as e:
            logging.getLogger(__name__).debug("job %d: not looked up (%s: %s)", i, type(e).__name__, e)
    return frozenset(done)


def plan(cfgs: list, skip: frozenset = frozenset()) -> list[Group]:
    """The launch's jobs (their composed configs, without the hydra node) in groups, in the order
    of their first job; those in `skip` (finished before) in none."""
    groups: dict[str, Group] = {}
    for i, cfg in enumerate(cfgs):
        if i in skip:
            continue
        try:
            key, numbers = signature(cfg)
        except Exception as e:  # an interpolation that fails: the job's own run says so
            groups[f"#{i}"] = Group([i], [{}], alone=f"its config does not resolve ({type(e).__name__})")
            continue
        group = groups.setdefault(key, Group([]))
        group.jobs.append(i)
        group.numbers.append(numbers)
    for group in groups.values():
        if group.alone is None:
            group.alone = alone_why(cfgs[group.jobs[0]], len(group.jobs))
    return list(groups.values())


def alone_why(cfg, jobs: int) -> str | None:
    """Why a group's jobs run one by one (None: they fuse): one job, or a method that fits one
    experiment at a time (its `fuses`)."""
    from runner.inference import from_config

    if jobs == 1:
        return "nothing to fuse it with"
    if cfg.get("check"):  # check=sbc: each job is its own program over its simulations
        return "a check (check=...) runs each job's own program"
    try:
        method = from_config(cfg.get("inference"))
    except Exception as e:  # the job's own run says what is wrong
        return f"its inference config is refused ({type(e).__name__})"
    return None if method.fuses else f"inference={method.name} fits one experiment at a time"


def describe(groups: list[Group], overrides: list, finished: int = 0) -> list[str]:
    """The launcher's lines: how many jobs, how they were grouped and why (`finished`: the jobs
    that FINISHED before, in no group)."""
    fused = [g for g in groups if g.alone is None]
    alone = sum(len(g.jobs) for g in groups if g.alone is not None)
    total = sum(len(g.jobs) for g in groups) + finished
    lines = [f"runner: vectorized launcher: {total} jobs: {sum(len(g.jobs) for g in fused)} in "
             f"{len(fused)} fused program(s), {alone} one by one"
             + (f", {finished} FINISHED before (skipped)" if finished else "")]
    for n, group in enumerate(groups, 1):
        varies = set(group.varies)
        keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides[group.jobs[0]]]
        same = [o for o, k in zip(overrides[group.jobs[0]], keys) if k not in varies and k.split(".")[0] not in AFTER_FIT]
        what = " ".join(same) or "(defaults)"
        if group.alone is None:
            lines.append(f"runner:   group {n}: {len(group.jobs)} jobs fused ({what}; varying "
                         f"{', '.join(group.varies) or 'nothing'})")
        else:
            lines.append(f"runner:   group {n}: {len(group.jobs)} job(s) one by one ({what}): {group.alone}")
    return lines


def fit_groups(groups: list[Group], cfgs: list, settings: dict, say=print) -> dict[int, Prefit]:
    """Each fused group's fit, by job index (`cfgs`: each job's config without the hydra node,
    `settings`: the launcher's `pruning` and `available` memory); a job whose config its build
    refuses is left out (its own run refuses it the same way)."""
    from omegaconf import OmegaConf

    from runner import timing

    done: dict[int, Prefit] = {}
    for n, group in enumerate(groups, 1):
        if group.alone is not None:
            continue
        with timing.phase("build"):
            built = build_all(group, cfgs)
        if len(built) < 2:
            group.alone = "its other jobs' configs are refused"
            continue
        node = cfgs[built[0][0]].get("optim")
        plan_ = Plan(varying={}, optim_node=None if node is None else OmegaConf.to_container(node, resolve=True),
                     pruning=settings.get("pruning"), available=settings.get("available"),
                     progress=f"group {n} ({len(built)} jobs) " if built[0][2].progress else None)
        try:
            with timing.phase("fit"):  # the group's compile counted apart
                outs = split_fit(built, group, plan_)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # the program could not be built for these jobs together
            from runner.errors import describe as words

            outs, group.alone = None, f"not fused ({words(e)})"
        if outs is None:
            group.alone = group.alone or f"inference={built[0][2].inference.name} fits one experiment at a time"
            say(f"runner:   group {n}: {group.alone}; its jobs run one by one")
            continue
        for (i, chash, exp), out in zip(built, outs):
            if out is not None:
                out.tags = {**out.tags, "fused_group": f"{n} ({len(built)} jobs)"}
                done[i] = Prefit(chash, exp, out)
    return done


def build_all(group: Group, cfgs: list) -> list[tuple]:
    """(job index, config hash, experiment) of each job of the group whose config builds."""
    from runner.errors import ConfigError
    from runner.experiment import build, build_like
    from runner.identity import config_hash

    built = []
    for i in group.jobs:
        try:
            chash = config_hash(cfgs[i])
            exp = build(cfgs[i], chash) if not built else build_like(cfgs[i], chash, built[0][2])
            built.append((i, chash, exp))
        except (ConfigError, Exception):  # its own run refuses it, in its own words
            continue
    return built


def split_fit(built: list, group: Group, plan_: Plan) -> list | None:
    """The FitOutputs of the built jobs (None: their method fits one at a time); a part whose
    program would not fit the memory budget is split in halves (nothing allocated yet); a single
    job that does not fit is left to its own run (None), which refuses it in one line."""
    from dataclasses import replace

    from runner.experiment import configure_jax
    from runner.inference.budget import OverBudget

    exps = [exp for _, _, exp in built]
    configure_jax(exps[0].cache_dir, exps[0].x64)
    numbers = [group.numbers[group.jobs.index(i)] for i, _, _ in built]
    varies = [k for k in group.varies if k.startswith("optim.")]
    part = replace(plan_, varying={k[len("optim."):]: [float(n[k]) for n in numbers] for k in varies},
                   model=[k for k in group.varies if k.startswith("model.")])
    try:
        return exps[0].inference.fit_fused(exps, part)
    except OverBudget as e:
        if len(built) == 1:
            return [None]
        half = len(built) // 2
        print(f"runner:   {(plan_.progress or '').strip() or 'a group'}: {e}: split into {half} + "
              f"{len(built) - half} jobs", file=sys.stderr)
        first = split_fit(built[:half], group, plan_)
        return None if first is None else first + split_fit(built[half:], group, plan_)


_SUPPLIED: ContextVar[Prefit | None] = ContextVar("runner_fused_fit", default=None)


@contextmanager
def supplied(prefit: Prefit | None):
    """While a fused job runs (runner.app.start takes its fit)."""
    token = _SUPPLIED.set(prefit)
    try:
        yield
    finally:
        _SUPPLIED.reset(token)


def take(config_hash: str) -> Prefit | None:
    """The fit the vectorized launcher did for the job running now, if it is this config's."""
    prefit = _SUPPLIED.get()
    return prefit if prefit is not None and prefit.config_hash == config_hash else None
