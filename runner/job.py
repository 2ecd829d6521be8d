"""A job: one run of the command, either on its own or as a member of a sweep. What differs
between the two lives here, so that runner/app.py runs both the same way:

- where its files go and what the user chose and typed (choices, overrides);
- a sweep's job: its parent run, its number ("job 3/8"), its configuration group; it yields to a
  run of the same config that is FINISHED (unless rerun=true) or RUNNING in a live process;
  it leaves runner_status.json in its run directory (runner.sweep counts them) and prints one
  line at its end;
- a single run: a short table at its end, and resume= (a sweep refuses it).

The sweep's own file (sweep.json: the parent's id, the job count, the tracking settings) is
written by runner.sweep before the jobs and read here by each job, whatever launcher runs it.
"""
from __future__ import annotations

import json
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from runner.errors import ConfigError

SWEEP_FILE = "sweep.json"
STATUS_FILE = "runner_status.json"
CHECKPOINT = "checkpoint.npz"
#: in a run directory whose fit checkpoints (or that a resume continues): locked (flock) by the
#: process fitting it, its pid inside; the kernel releases it when that process ends, however
LOCK = ".runner.lock"
TRIALS = "trials"  # <sweep dir>/trials/<job number>.json: a search's trial, per job
#: set by a launcher that requeues its jobs (hydra_plugins/runner_slurm) in a requeued job's process
REQUEUED = "RUNNER_REQUEUED"


@dataclass(frozen=True)
class Job:
    """A single run."""
    run_dir: Path
    choices: dict
    overrides: tuple = ()
    rerun: bool = False
    quiet: bool = False  # no summary printed (runner.run(quiet=True))

    label = ""  # the progress line's and summary line's prefix
    parent_id = None
    yield_to_finished = None  # runner.tracking.base.RunStart: a single run never yields
    may_log_later = False  # its record may be logged while the command goes on (RunScope.complete)

    def tags(self) -> dict:
        return {}

    def skip(self, backend, config_hash: str) -> str | None:
        """A finished run that makes this one redundant, before any work; None: run it."""
        return None

    def said(self, status: str, **extra) -> None:
        """The job's status (run, skipped, failed) where a sweep counts it."""

    def skipped(self, why: str, run_id: str | None = None, final_loss: float | None = None) -> None:
        """Another run makes this one redundant: said (with that run's final loss), nothing run."""
        from runner.redact import redact

        self.said("skipped", run_id=run_id, final_loss=final_loss)
        print(redact(f"runner: skipped {' '.join(self.overrides)}: {why}"))

    def refused(self, message: str, code: int):
        """A ConfigError, TrackingError or RunFailed: one line, and the command exits with `code`."""
        print(f"runner: error: {message}", file=sys.stderr)
        raise SystemExit(code) from None

    def goes_on(self, error: Exception) -> bool:
        """Whether the command goes on after an unexpected error (False: its traceback ends it)."""
        return False

    def resume_dir(self, value, backend) -> Path | None:
        """resume=<run directory or run id> -> the run directory holding checkpoint.npz."""
        return None if value is None else resume_folder(str(value), backend)

    def announce(self, line: str, table: str) -> None:
        if not self.quiet:
            print(line)
            print(table)

    def safe_point(self, safe_point):
        """The fit's safe point (runner.lifecycle): a search's trial with a pruner wraps it."""
        return safe_point


@dataclass(frozen=True)
class SweepJob(Job):
    """One job of a Hydra multirun: a child of the sweep's parent run."""
    number: int = 0
    count: int | None = None
    parent: str | None = None
    group: str = "(defaults)"  # its overrides without the seed: the configuration its seed is one of
    trial: dict | None = None  # a search's trial (runner/search.py): its number, study, pruning

    @property
    def label(self) -> str:
        of = f"{self.number + 1}/{self.count}" if self.count else f"{self.number + 1}"
        return f"trial {self.trial['number']} ({of}) " if self.trial else f"job {of} "

    @property
    def parent_id(self):
        return self.parent

    @property
    def yield_to_finished(self) -> bool:
        return not self.rerun

    @property
    def may_log_later(self) -> bool:
        """A sweep's job, not a search's trial (the sweeper takes a trial's value as logged)."""
        return self.trial is None

    def tags(self) -> dict:
        from runner.redact import redact

        trial = {"trial_number": self.trial["number"], "study_name": self.trial["study_name"]} if self.trial else {}
        return {"overrides": redact(" ".join(self.overrides)), "config_group": self.group, **trial}

    def skip(self, backend, config_hash: str) -> str | None:
        return None if self.rerun else backend.finished_run(config_hash, self.parent)

    def said(self, status: str, **extra) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / STATUS_FILE).write_text(json.dumps({"status": status, **extra}))

    def refused(self, message: str, code: int) -> None:
        """The job failed: said in its run directory and in one line; the sweep goes on."""
        self.said("failed", error=message[:500])
        print(f"runner: error: {message}", file=sys.stderr)

    def goes_on(self, error: Exception) -> bool:
        from runner.errors import describe
        from runner.redact import redact

        self.said("failed", error=redact(f"{type(error).__name__}: {error}")[:500])
        print(redact(f"runner: error: job {' '.join(self.overrides)} failed: {describe(error)}"), file=sys.stderr)
        return True

    def resume_dir(self, value, backend) -> Path | None:
        if value is not None:
            raise ConfigError("resume= continues one run: run it without -m")
        return requeued_dir(self.run_dir)

    def announce(self, line: str, table: str) -> None:
        if not self.quiet:
            print(line)  # one line per job

    def safe_point(self, safe_point):
        if not (self.trial and self.trial.get("reports")):
            return safe_point
        from runner.trial import Reporter

        return Reporter(self.trial, safe_point)


def from_hydra(cfg) -> Job:
    """The job Hydra is running now: a sweep's member in a multirun (its sweep file read), else a
    single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from runner.identity import CHOICE_GROUPS, group_label

    hc = HydraConfig.get()
    choices = {g: hc.runtime.choices.get(g) for g in CHOICE_GROUPS}
    common = dict(run_dir=Path(hc.runtime.output_dir), choices=choices, overrides=tuple(hc.overrides.task),
                  rerun=bool(cfg.get("rerun", False)))
    if hc.mode != RunMode.MULTIRUN:
        return Job(**common)
    at_home(hc.runtime.cwd)
    sweep = read_sweep(hc.sweep.dir) or {}
    return SweepJob(**common, number=int(hc.job.num), count=sweep.get("jobs"), parent=sweep.get("parent_run_id"),
                    group=group_label(common["overrides"]), trial=read_trial(hc.sweep.dir, int(hc.job.num)))


def at_home(home: str) -> None:
    """A sweep's job runs in the driver's folder, whichever process or node runs it (a Ray
    worker starts in its node's folder): relative paths (the sqlite store, data.path, the
    sweep's folder) and the user's modules (model.fn=mymodels.f) are the driver's."""
    import os
    import sys

    if not home or Path.cwd() == Path(home):
        return
    if not Path(home).is_dir():
        raise ConfigError(f"this job runs on a machine without the driver's folder {home}: run the sweep "
                          "from a folder every node shares (a network file system)")
    os.chdir(home)
    if home not in sys.path:
        sys.path.insert(0, home)


def read_sweep(sweep_dir) -> dict | None:
    path = Path(sweep_dir) / SWEEP_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def read_trial(sweep_dir, number: int) -> dict | None:
    """The search's trial that job `number` is (written by runner/search.py before it launches
    the job, whatever launcher runs it); None: not a search."""
    path = Path(sweep_dir) / TRIALS / f"{number}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def resume_folder(resume: str, backend) -> Path:
    """resume=<run directory or run id> -> the run directory holding checkpoint.npz."""
    folder = Path(resume).expanduser()
    if not folder.is_dir() and re.fullmatch(r"[0-9a-f]{32}", resume):
        found = backend.run_dir_of(resume)
        if found is None:
            raise ConfigError(f"resume={resume}: no such run in the store (or it has no run directory)")
        folder = Path(found)
    if not folder.is_dir():
        raise ConfigError(f"resume={resume} is neither a run directory nor a run id of the store")
    if not (folder / CHECKPOINT).is_file():
        raise ConfigError(f"resume: no {CHECKPOINT} in {folder} (an SVI fit writes one every checkpoint.every_s "
                          "seconds once it runs that long)")
    return folder.resolve()


def requeued_dir(run_dir: Path) -> Path | None:
    """A sweep's job requeued by its launcher (SLURM, after the signal before its time limit)
    continues the checkpoint in its own run directory, and so its own run (one MLflow run per
    job, whatever the requeues); None: a fresh job."""
    import os

    return run_dir if os.environ.get(REQUEUED) and (run_dir / CHECKPOINT).is_file() else None


def check_resumable(exp, folder: Path) -> None:
    """A checkpoint is continued only by a method that checkpoints, with the same config: refused
    in one line before the interrupted run is reopened."""
    if not exp.inference.checkpoints:
        raise ConfigError(f"resume= continues a fit that writes checkpoints (inference=svi), not inference={exp.method}")
    saved, step = read_checkpoint(folder / CHECKPOINT)
    if saved != exp.config_hash:
        raise ConfigError(f"resume: {folder} was a run of another config: resume with the same command "
                          "(and data) as that run, plus resume=...")
    steps = getattr(exp.inference, "steps", None)
    if steps is not None and not 0 <= step <= int(steps):
        raise ConfigError(f"resume: {folder / CHECKPOINT} says step {step}, outside this fit's 0..{steps}: "
                          "it is not this run's checkpoint")


def read_checkpoint(path: Path) -> tuple[str, int]:
    """(config hash, step) of a checkpoint read back as untrusted data, every array read (no pickles:
    np.load's default; a fit's state may hold NaN, e.g. curves not yet filled); one ConfigError line
    for a file cut short or not runner's."""
    import numpy as np

    from runner.errors import describe
    from runner.readback import NPZ_SIGNATURES, first_bytes

    try:
        first_bytes(path, NPZ_SIGNATURES, f"resume: {path}", "a .npz file", ": not runner's checkpoint")
        with np.load(path) as f:
            names = set(f.files)
            if not {"config_hash", "step"} <= names:
                raise ConfigError(f"resume: {path} has no config hash or step: it was not written by runner's fit")
            saved, step = str(f["config_hash"]), f["step"]
            if step.shape != () or step.dtype.kind not in "iu":
                raise ConfigError(f"resume: {path} has a step that is not an integer ({step!r})")
            for name in names:  # every array readable (a cut file fails here), none an object array
                f[name]
    except ConfigError:
        raise
    except Exception as e:  # a zip cut short, not a .npz, an object array (pickles are refused)
        raise ConfigError(f"resume: {path} cannot be read ({describe(e)}): cut short, or not runner's checkpoint") from None
    return saved, int(step)


def lock_folder(folder: Path, what: str) -> int:
    """An exclusive flock on `folder`'s LOCK file (created), held on the returned descriptor
    until it is closed or the process ends (a crash or SIGKILL included); ConfigError in one line
    while another process holds it. The descriptor is not inherited by child processes."""
    import fcntl
    import os

    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        raise ConfigError(f"{what + ': ' if what else ''}{folder} is being fitted by another command (pid "
                          f"{holder or 'unknown'}): wait for it to end, or stop it first") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


#: the run directories this process holds the lock of (a requeued job resumes its own: locked once)
HELD: set = set()


@contextmanager
def run_dir_locks(folders: list, what: str):
    """lock_folder on each of `folders` that this process does not hold yet, for the block."""
    import os

    held: dict = {}
    try:
        for folder in dict.fromkeys(Path(f).resolve() for f in folders):
            if folder not in HELD:
                held[folder] = lock_folder(folder, what)
                HELD.add(folder)
        yield
    finally:
        for folder, fd in held.items():
            HELD.discard(folder)
            os.close(fd)
