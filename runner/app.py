"""One run, orchestrated: build -> fit -> outputs -> tracking. Nothing here fits, writes a file
or talks to a store itself: runner.experiment makes the typed experiment (the last reader of the
config), runner.inference.<method> fits it and writes its outputs, runner.identity names and tags
it, runner.tracking records it. `execute` raises (ConfigError, TrackingError, RunFailed) and
never exits; `run` is the Hydra task, which turns those into one line and an exit code.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from runner.errors import ConfigError, RunFailed, TrackingError, describe, disk_full
from runner.redact import redact, redact_folder


@dataclass
class Outcome:
    """What one run left: its id in the tracking store (None for tracking=none), its result (the
    kept FitResult / EMResult / NUTSResult) and where its files are."""
    run_id: str | None
    result: object
    run_dir: Path
    results: list | None = None  # SVI: one FitResult per replicate
    scalars: dict | None = None  # the run's scalar metrics
    experiment: object = None  # the built runner.experiment.Experiment

    @property
    def final_loss(self) -> float | None:
        if hasattr(self.result, "final_loss"):  # SVI: the kept replicate's
            return self.result.final_loss
        return (self.scalars or {}).get("final_loss")


def configure_jax(cache_dir: str | None) -> None:
    """XLA's persistent compile cache: repeated runs skip the compile."""
    import jax

    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(cache_dir))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def write_status(run_dir: Path, status: str, **extra) -> None:
    """runner_status.json of a sweep's job: run, skipped or failed (runner.sweep counts them)."""
    from runner.sweep import STATUS_FILE

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / STATUS_FILE).write_text(json.dumps({"status": status, **extra}))


def run(cfg):
    """The Hydra task: choices and run directory from Hydra, then execute; errors become one line
    on stderr and an exit code (2: the user's input, 1: the run failed). Inside a sweep a failed
    job is recorded (runner_status.json) and the sweep goes on with the next."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from runner.identity import CHOICE_GROUPS
    from runner.sweep import read_sweep

    hc = HydraConfig.get()
    choices = {g: hc.runtime.choices.get(g) for g in CHOICE_GROUPS}
    sweep = None
    if hc.mode == RunMode.MULTIRUN:
        sweep = {**(read_sweep(hc.sweep.dir) or {}), "overrides": list(hc.overrides.task), "job": int(hc.job.num)}
    run_dir = Path(hc.runtime.output_dir)
    redact_folder(run_dir)  # Hydra has written the config, overrides included, before this task runs
    try:
        outcome = execute(cfg, choices, run_dir, sweep=sweep, overrides=list(hc.overrides.task))
    except (ConfigError, TrackingError, RunFailed) as e:
        code = getattr(e, "code", 2)
        if sweep is not None:
            write_status(run_dir, "failed", error=redact(str(e))[:500])
            print(f"runner: error: {redact(str(e))}", file=sys.stderr)
            return None
        print(f"runner: error: {redact(str(e))}", file=sys.stderr)
        raise SystemExit(code) from None
    except Exception as e:
        from runner.errors import INTERRUPTED

        if sweep is None or INTERRUPTED["code"]:
            raise
        write_status(run_dir, "failed", error=redact(f"{type(e).__name__}: {e}")[:500])
        print(redact(f"runner: error: job {' '.join(sweep['overrides'])} failed: {describe(e)}"), file=sys.stderr)
        return None
    return None if outcome is None else outcome.final_loss


def execute(cfg, choices: dict, run_dir: Path, sweep: dict | None = None, overrides: list | None = None,
            quiet: bool = False) -> Outcome | None:
    """One run. In a sweep (`sweep` from runner.sweep): a child of the sweep's parent run, skipped
    (None) when its config already has a finished run (unless rerun=true).

    The tracking backend opens the run (MLflow: RUNNING, with pid and host tags, in the
    background while the fit compiles); an interruption ends it KILLED, a crash FAILED, so the
    store tells the truth. Raises ConfigError / TrackingError before any fit, RunFailed after."""
    from runner import identity
    from runner import report as console_report
    from runner.experiment import build
    from runner.progress import Progress
    from runner.tracking import from_config

    tracker = from_config(cfg.tracking)
    rerun = bool(cfg.get("rerun", False))
    tracker.check()
    resume_dir = None
    if cfg.get("resume") is not None:
        if sweep is not None:
            raise ConfigError("resume= continues one run: run it without -m")
        resume_dir = resume_folder(str(cfg.resume), tracker)
    chash = None
    if sweep is not None:  # the sweep made the store: check for a finished twin before any work
        from runner.identity import config_hash

        tracker.start()
        chash = config_hash(cfg)  # it reads the data file and the model's source: once, reused by build
        done = None if rerun else tracker.find_finished(chash)
        if done:
            write_status(run_dir, "skipped", run_id=done)
            print(redact(f"runner: skipped {' '.join(sweep['overrides'])}: already FINISHED as run {done}"))
            return None
    exp = build(cfg, chash)  # the last reader of cfg
    exp.run_dir, exp.resume_dir = run_dir, resume_dir
    if resume_dir is not None:  # checked before the interrupted run is reopened
        from runner.inference.svi.program import Checkpoint

        if exp.method != "svi":
            raise ConfigError(f"resume= continues an SVI fit (inference=svi), not inference={exp.method}")
        if Checkpoint.saved_config_hash(resume_dir / "checkpoint.npz") not in ("", exp.config_hash):
            raise ConfigError(f"resume: {resume_dir} was a run of another config: resume with the same command "
                              "(and data) as that run, plus resume=...")

    import jax

    from runner.outputs import model_files, predict_files, write_config

    tags = identity.run_tags(exp, choices, run_dir, sweep, overrides)
    params = {**exp.params, "jax_version": jax.__version__}
    if resume_dir is not None:  # the reopened run keeps its own (MLflow params are written once)
        params = {k: v for k, v in params.items() if k != "resume" and not k.startswith("checkpoint.")}
    tracker.check_params(params)
    try:
        write_config(run_dir, exp.config_yaml)
    except OSError as e:  # before the run is opened: nothing to end
        if not disk_full(e):
            raise
        raise _cannot_write(e, run_dir, "nothing was run") from None
    configure_jax(exp.cache_dir)
    if sweep is None:
        # created in the background while the fit compiles; a resumed fit reopens its interrupted run
        tracker.start(open_run={**tags, "runner.resumes": str(resume_dir)} if resume_dir else tags)
    else:
        twin = tracker.open_job(tags, chash, finished=not rerun)  # the sweep's tracker is already started
        if twin:  # the same sweep started twice at once: the other command runs (or ran) this job
            write_status(run_dir, "skipped", run_id=twin)
            print(redact(f"runner: skipped {' '.join(sweep['overrides'])}: run {twin} has the same config "
                         "(RUNNING in another process, or FINISHED)"))
            return None
    method = exp.inference
    if exp.data is not None:  # every run with data writes inference_data.nc after its fit
        from runner.inference_data import preimport

        preimport()
    try:
        progress = Progress(method.steps, label=identity.job_label(sweep)) if exp.progress and hasattr(method, "steps") else None
        result = method.fit(exp, progress=progress)
        report = method.outputs(exp, result, run_dir)
        params["key_derivation"] = report.key_derivation
        report.artifacts += model_files(exp, run_dir)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C (130) or SIGTERM (143): KILLED
        if sweep is not None:
            write_status(run_dir, "failed", error="interrupted")
        _end_quietly(tracker, "KILLED", params, run_dir)
        raise
    except Exception as e:  # (an interruption may arrive wrapped by JAX as another exception)
        from runner.errors import INTERRUPTED

        status = "KILLED" if INTERRUPTED["code"] else "FAILED"
        ended = _end_quietly(tracker, status, params, run_dir, {"error": redact(f"{type(e).__name__}: {e}")[:500]})
        if disk_full(e):  # a full disk is one line, not a traceback
            raise _cannot_write(e, run_dir, f"run {ended} is FAILED" if ended else "the run failed") from None
        raise
    model = None
    if tracker.log_model and report.predictable and not report.failed:
        model = {"files": predict_files(run_dir), "method": exp.method, "data": exp.data,
                 "constants": dict(getattr(exp.model, "constants", None) or {})}
    from runner.errors import INTERRUPTED

    INTERRUPTED["defer"] = True  # Ctrl-C / SIGTERM while the results are logged: after them (below)
    try:
        run_id = tracker.log_run(tags={**tags, **report.tags}, params=params, scalars=report.scalars,
                                 curves=report.curves, artifact_dir=run_dir, artifacts=report.artifacts,
                                 status="FAILED" if report.failed else "FINISHED", into_open_run=True,
                                 dataset=identity.dataset_info(exp, choices), model=model,
                                 curve_steps=report.curve_steps)
        child_tags = {k: v for k, v in tags.items() if k not in ("config_group", "mlflow.parentRunId", "seed")}
        for child in report.children:
            tracker.log_child(child, parent_id=run_id, tags=child_tags, params=params)
        tracker.flush()  # the replicates' child runs: done, or their error raised here
    except TrackingError as e:
        raise RunFailed(f"{e}; the fit is saved in {run_dir}", code=2) from None
    except Exception as e:
        raise RunFailed(f"tracking failed ({describe(e)}); the fit is saved in {run_dir}") from None
    finally:
        INTERRUPTED["defer"] = False
    if INTERRUPTED["code"]:  # it came while the results were logged: the run is complete, say so
        INTERRUPTED["said"] = True
        print(f"runner: interrupted{' (SIGTERM)' if INTERRUPTED['code'] == 143 else ''} while the results were "
              f"logged: run {run_id} is complete and {'FAILED' if report.failed else 'FINISHED'}", file=sys.stderr)
        raise SystemExit(INTERRUPTED["code"])
    for stale in tracker.reaped:
        print(f"runner: marked run {stale} FAILED: it was left RUNNING by a process that is gone")
    if report.failed:
        where = f"run {run_id} is FAILED" if run_id else f"the run in {run_dir} failed"
        raise RunFailed(f"{report.failed}; {where}, what was finite is logged")
    if sweep is not None:
        from runner.identity import group_label

        write_status(run_dir, "run", run_id=run_id, config_group=group_label(sweep["overrides"]),
                     final_loss=report.scalars.get("final_loss"), config_hash=exp.config_hash, seed=exp.seed)
    if not quiet:
        print(console_report.summary_line(exp, choices, report, run_id, sweep, run_dir))
        if sweep is None:  # a short table for a person; sweeps keep to one line per job
            print(console_report.summary_table(exp, choices, report, run_id, tags["mlflow.runName"], run_dir, tracker.look()))
    return Outcome(run_id=run_id, result=report.result, run_dir=run_dir, results=report.results,
                   scalars=report.scalars, experiment=exp)


def _cannot_write(e: OSError, run_dir: Path, outcome: str) -> RunFailed:
    return RunFailed(f"cannot write {e.filename or run_dir}: {e.strerror}; {outcome}")


def resume_folder(resume: str, tracker) -> Path:
    """resume=<run directory or MLflow run id> -> the run directory holding checkpoint.npz."""
    import re

    folder = Path(resume).expanduser()
    if not folder.is_dir() and re.fullmatch(r"[0-9a-f]{32}", resume):
        found = tracker.run_dir_of(resume)
        if found is None:
            raise ConfigError(f"resume={resume}: no such run in the store (or it has no run directory)")
        folder = Path(found)
    if not folder.is_dir():
        raise ConfigError(f"resume={resume} is neither a run directory nor a run id of the store")
    if not (folder / "checkpoint.npz").is_file():
        raise ConfigError(f"resume: no checkpoint.npz in {folder} (an SVI fit writes one every checkpoint.every_s "
                          "seconds once it runs that long)")
    return folder.resolve()


def _end_quietly(tracker, status: str, params: dict, run_dir: Path, tags: dict | None = None) -> str | None:
    """End the opened run on an interruption or crash (its id); never mask the original exception."""
    try:
        return tracker.end(status, params=params, tags=tags, artifact_dir=run_dir,
                           artifacts=["config.yaml", "metrics.json"])
    except BaseException:
        return None
