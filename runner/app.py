"""One run, one straight line: open -> fit -> write -> log. Nothing here fits, writes a file or
talks to a store itself, and nothing here names a method or asks whether it is in a sweep:
runner.experiment makes the typed experiment (the last reader of the config), the method fits it
(runner.inference), runner.outputs writes the run directory, runner.identity names and tags it,
runner.tracking records it, runner.lifecycle ends it FINISHED / FAILED / KILLED, and the job
(runner.job: a single run or a sweep's member) carries what differs between the two.

`execute` raises (ConfigError, TrackingError, RunFailed) and never exits; `run` is the Hydra
task, which turns those into one line and an exit code (the job decides: a sweep goes on).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runner.errors import ConfigError, Pruned, RunFailed, TrackingError, disk_full
from runner.experiment import configure_jax
from runner.redact import redact, redact_folder


@dataclass
class Outcome:
    """What one run left: its id in the tracking store (None for tracking=none), the fit's output
    (runner.inference.FitOutput), its scalars as recorded, where its files are, the experiment."""
    run_id: str | None
    output: object
    scalars: dict
    run_dir: Path
    experiment: object

    @property
    def final_loss(self) -> float | None:
        return self.scalars.get("final_loss")


def run(cfg):
    """The Hydra task: the job Hydra runs now, then `start`. Errors become one line on stderr and
    an exit code (2: the user's input, 1: the run failed); a sweep's job records them in its
    run directory and the sweep goes on. Returns the final loss (for a sweeper): the logged
    `final_loss` (with replicates, their mean); a skipped job's, its finished twin's."""
    from runner import timing
    from runner.lifecycle import resume_gc

    timing.since("compose", "compose")
    timing.ON = timing.ON or cfg.get("timing") is True
    timing.job_started()
    try:
        return _run(cfg)
    finally:
        resume_gc()  # a job that ended before its build
        timing.mark("exit")


def _run(cfg):
    from runner.job import from_hydra
    from runner.lifecycle import SIGNALS

    job = from_hydra(cfg)
    redact_folder(job.run_dir)  # Hydra has written the config, overrides included, before this task runs
    try:
        outcome = start(cfg, job)
    except Pruned:  # a search's pruner stopped the fit: the run is KILLED and tagged, the trial PRUNED
        return None
    except (ConfigError, TrackingError, RunFailed) as e:
        return job.refused(redact(str(e)), getattr(e, "code", 2))
    except Exception as e:
        if SIGNALS.code or not job.goes_on(e):
            raise
        return None
    return None if outcome is None else outcome.final_loss


def start(cfg, job) -> Outcome | None:
    """The backend checked, a finished twin looked for (a sweep's job), the experiment built and a
    resume= checked, all before any fit; then `execute`."""
    from runner import fusion, identity, timing, tracking
    from runner.experiment import build
    from runner.job import check_resumable, run_dir_locks
    from runner.lifecycle import resume_gc

    with timing.phase("build"):
        backend = tracking.from_config(cfg.tracking)
        backend.check()
        resume = job.resume_dir(cfg.get("resume"), backend)
    # a resume holds its run directory's lock from here to its end: a second resume of it is refused
    with run_dir_locks([] if resume is None else [resume], "resume"):
        with timing.phase("build"):
            config_hash = identity.config_hash(cfg)  # it reads the data file and the model's source: once
            done = job.skip(backend, config_hash)
        if done:
            return twin_outcome(job, backend, f"already FINISHED as run {done}", done)
        prefit = fusion.take(config_hash)  # hydra/launcher=vectorized fitted it with its group
        with timing.phase("build"):
            exp = build(cfg, config_hash) if prefit is None else prefit.experiment  # the last reader of cfg
        resume_gc()  # the CLI's imports and build done
        if resume is not None:  # before the interrupted run is reopened
            check_resumable(exp, resume)
        return execute(exp, job, backend, resume=resume, fitted=None if prefit is None else prefit.output,
                       ahead=None if prefit is None else prefit.ahead)


def execute(exp, job, backend, resume: Path | None = None, fitted=None, ahead=None) -> Outcome | None:
    """One run: opened (RUNNING while it fits), fitted, written into its run directory, recorded;
    an interruption ends it KILLED, a crash FAILED (runner.lifecycle.RunScope). `fitted`: its
    FitOutput when its fit was done already (a fused sweep's group); `ahead`: its files, when
    they were written ahead (runner.fusion.Ahead)."""
    from runner import identity, outputs, timing
    from runner.job import run_dir_locks
    from runner.lifecycle import RunScope
    from runner.tracking.base import RunEnd

    with timing.phase("build"):
        params = identity.run_params(exp, resumed=resume is not None)
        backend.check_params(params)
        write_config(exp, job.run_dir)
        backend.connect()  # nothing refused: a background backend sets its store up while this process compiles
        configure_jax(exp.cache_dir, exp.x64)
        start = identity.run_start(exp, job, resume)  # its name and tags
    # a fit that checkpoints holds its run directory's lock: a resume of it while it runs is refused
    with (run_dir_locks([job.run_dir] if checkpoints(exp, resume) else [], ""),
          RunScope(backend, job, RunEnd(params=params, artifact_dir=job.run_dir)) as scope):
        with timing.phase("logging"):
            twin = scope.open(start)
        if twin:  # the same sweep started twice at once: the other command runs (or ran) this job
            return twin_outcome(job, backend, f"run {twin} has the same config (RUNNING in another process, "
                                "or FINISHED)", twin)
        with timing.phase("fit"):  # its compile counted apart where the method says (SVI)
            out = fitted if fitted is not None else exp.inference.fit(exp, fit_context(exp, job, resume, scope))
        scope.safe_point()
        params = {**params, "key_derivation": out.key_derivation}  # the run's and its children's

        def children_written(children):  # SVI's replicates: logged while the run's own files are written
            scope.log_children(identity.child_records(start, children, params, job.run_dir))

        with timing.phase("outputs"):
            written = ahead.into(job.run_dir) if ahead is not None else outputs.write(exp, out, job.run_dir,
                                                                                      children_written)
        if not scope.children_sent:  # (children logged: the run is completed, then a signal stops the command)
            scope.safe_point()
        with timing.phase("logging"):
            record = identity.run_record(exp, job, start, out, written, params)
            children = [] if scope.children_sent else identity.child_records(start, written.children, params,
                                                                             job.run_dir)
            # a fused job: logged while the next one starts
            run_id = scope.complete(record, children, later=fitted is not None)
    return finish(exp, job, backend, out, record, run_id)


def twin_outcome(job, backend, why: str, run_id: str) -> Outcome:
    """A sweep's job that another run of its config answers: skipped, with that run's final loss
    (a search's trial gets the value it logged instead of failing; None while it is RUNNING)."""
    value = backend.final_loss_of(run_id)
    job.skipped(why, run_id=run_id, final_loss=value)
    return Outcome(run_id=run_id, output=None, scalars={} if value is None else {"final_loss": value},
                   run_dir=job.run_dir, experiment=None)


def finish(exp, job, backend, out, record, run_id: str | None) -> Outcome:
    """After the record: stale runs said, a failed fit raised (it is recorded), the summary."""
    from runner import report

    for stale in backend.reaped:
        print(f"runner: marked run {stale} FAILED: it was left RUNNING by a process that is gone")
    if out.failed:
        where = f"run {run_id} is FAILED" if run_id else f"the run in {job.run_dir} failed"
        raise RunFailed(f"{out.failed}; {where}, what was finite is logged")
    job.announce(report.summary_line(exp, job, out, run_id), report.summary_table(exp, job, record, run_id, backend.look()))
    return Outcome(run_id=run_id, output=out, scalars=record.scalars, run_dir=job.run_dir, experiment=exp)


def checkpoints(exp, resume: Path | None) -> bool:
    """Whether the fit writes checkpoints into its run directory."""
    return bool(exp.inference.checkpoints and (exp.checkpoint_every_s is not None or resume is not None))


def fit_context(exp, job, resume: Path | None, scope):
    """What the fit gets from the run: its progress label, where it checkpoints, what it
    continues, and the run's safe point."""
    from runner.inference import FitContext
    from runner.job import CHECKPOINT

    return FitContext(progress=job.label if exp.progress else None,
                      checkpoint=job.run_dir / CHECKPOINT if checkpoints(exp, resume) else None,
                      resume=None if resume is None else resume / CHECKPOINT,
                      safe_point=job.safe_point(scope.safe_point))


def write_config(exp, run_dir: Path) -> None:
    """config.yaml, before the run is opened: a full disk here is one line, nothing to end."""
    from runner.outputs import write_config as write

    try:
        write(run_dir, exp.config_yaml)
    except OSError as e:
        if not disk_full(e):
            raise
        raise RunFailed(f"cannot write {e.filename or run_dir}: {e.strerror}; nothing was run") from None
