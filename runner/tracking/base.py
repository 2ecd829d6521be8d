"""The tracking interface: a run's and a sweep's lifecycle events, and a few questions about what
is recorded (the shape of Sacred's RunObserver).

A backend implements the events it records; every one has a do-nothing default. Events, in the
order a command sends them:

    check -> check_params -> connect -> run_started -> (run_completed | run_failed | run_killed)
    -> child_logged... -> flush
    a sweep: sweep_started (before its jobs), sweep_updated... , sweep_completed | sweep_failed | sweep_killed

Queries: `finished_run` (a finished run of a config hash), `final_loss_of` (a run's), `children` (a sweep's runs),
`run_dir_of` (the run directory of a run id); for the side commands `runs` (an experiment's runs
as plain dicts) and `fetch` (a run's files). A backend whose work is slow Python (MLflow: ~2.5 s
of imports and store set-up) sets `background = True`: runner.tracking.from_config then runs it
in the tracking worker process (runner/tracking/worker.py), any backend the same way.

The records are plain data in runner's own words (a run's `name`, its `parent_id`); each backend
maps them to its own (MLflow's system tags live in runner/tracking/mlflow/ only).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RunStart:
    """What a run is opened with (RUNNING, so that an interrupted fit leaves a record)."""
    name: str
    tags: dict
    config_hash: str
    parent_id: str | None = None  # a sweep's job: its sweep's parent run
    resumes: str | None = None  # a run directory whose interrupted run is reopened (resume=)
    #: a sweep's job yields to a run of the same config: a FINISHED one (unless rerun=true) or a
    #: RUNNING one of a live process (the same sweep started twice at once). None: never.
    yield_to_finished: bool | None = None


@dataclass
class RunRecord:
    """Everything a run leaves in the store, logged in one event."""
    name: str
    tags: dict
    params: dict
    scalars: dict
    curves: dict  # name -> values (logged with their steps)
    artifact_dir: Path
    artifacts: list  # files, relative to artifact_dir
    curve_steps: list | None = None  # the step of each curve point (None: point i is step i)
    status: str = "FINISHED"  # FAILED: the fit failed (every restart diverged); what was finite is logged
    dataset: dict | None = None  # name, source, array: the run's input
    model: dict | None = None  # files, method, data, constants: a model that predicts (logged where the backend can)
    parent_id: str | None = None


@dataclass
class RunEnd:
    """What an interrupted or failed run records before it ends KILLED or FAILED."""
    params: dict = field(default_factory=dict)
    error: str | None = None
    artifact_dir: Path | None = None
    artifacts: tuple = ("config.yaml", "metrics.json")  # those that exist
    tags: dict = field(default_factory=dict)  # e.g. `pruned` (a search's trial stopped early by its pruner)


@dataclass
class SweepStart:
    name: str
    sweep_hash: str
    tags: dict
    description: str
    reuse: bool  # an earlier parent of the same sweep is reopened (not when rerun=true)


@dataclass
class SweepResult:
    """A sweep's aggregate (runner.sweep.aggregate) for its parent run."""
    scalars: dict
    tags: dict
    description: str
    table: dict  # column -> values
    table_file: str
    artifact_dir: Path
    artifacts: list


class Tracking:
    #: run this backend in the tracking worker process (runner/tracking/worker.py)
    background: bool = False
    #: the run this command opened (None before run_started or after it ended)
    run_id: str | None = None
    #: runs found left RUNNING by a process that is gone, and ended FAILED
    reaped: list = []

    # --- before anything ---------------------------------------------------------------------
    def check(self, create: bool = True) -> None:
        """Raise runner.errors.TrackingError (one line) if the store cannot be reached or written
        (`create=False`: only read, by the side commands; a store that is not there is an error)."""

    def check_params(self, params: dict) -> None:
        """Raise TrackingError (one line) for a param the store cannot keep, before any fit."""

    def connect(self) -> None:
        """Get ready (a background backend does it while the fit compiles)."""

    # --- a run ---------------------------------------------------------------------------------
    def run_started(self, start: RunStart) -> str | None:
        """Open the run; returns the id of a run it yields to (RunStart.yield_to_finished), in
        which case nothing is opened and nothing follows."""
        return None

    def run_completed(self, record: RunRecord) -> str | None:
        """The run's record, into the opened run (or a new one); ends it with record.status.
        Returns its id."""
        return None

    def run_completed_later(self, record: RunRecord, failed) -> str | None:
        """`run_completed`, where the backend can log it while the command goes on (a background
        backend: runner.tracking.worker); `failed(error)` is then called with its error, at the
        latest when `runner.tracking.settle()` returns. Here: logged at once, its error raised."""
        return self.run_completed(record)

    def settle(self) -> None:
        """Wait for the records this command logs later (`run_completed_later`); their errors
        to their jobs. Here: nothing is logged later."""

    def run_failed(self, end: RunEnd) -> str | None:
        """End the opened run FAILED with what there is; its id."""
        return None

    def run_killed(self, end: RunEnd) -> str | None:
        """End the opened run KILLED (Ctrl-C, SIGTERM) with what there is; its id."""
        return None

    def child_logged(self, record: RunRecord) -> None:
        """A run under record.parent_id (an SVI replicate); may be asynchronous: flush() waits."""

    def flush(self) -> None:
        """Wait for what child_logged started; raise the first error."""

    # --- a sweep -------------------------------------------------------------------------------
    def sweep_started(self, start: SweepStart) -> tuple[str | None, bool]:
        """The sweep's parent run (an earlier one of the same sweep when start.reuse): (id, reused)."""
        return None, False

    def sweep_completed(self, parent_id: str | None, result: SweepResult) -> str | None:
        """The aggregate onto the parent, which ends FINISHED (unless a live command of the same
        sweep shares it: that command ends it). Returns where a person sees the sweep's children
        compared (a viewer's address, and what serves it), if the backend has one."""
        return None

    def sweep_failed(self, parent_id: str | None, error: str) -> None:
        """The sweep's summary failed: the parent ends FAILED."""

    def sweep_killed(self, parent_id: str | None) -> None:
        """Ctrl-C or SIGTERM during a sweep: the parent and its jobs that were running end KILLED."""

    def sweep_updated(self, parent_id: str | None, tags: dict) -> None:
        """While the sweep runs: tags onto its parent (a search's best trial so far)."""

    # --- questions -----------------------------------------------------------------------------
    def finished_run(self, config_hash: str, parent_id: str | None = None) -> str | None:
        """The id of a FINISHED run of this config hash, if any; with `parent_id`, only a child of
        that sweep's parent (the same sweep run again)."""
        return None

    def final_loss_of(self, run_id: str) -> float | None:
        """The `final_loss` a recorded run logged (a search's trial that a finished twin answers)."""
        return None

    def children(self, parent_id: str | None, curves: int = 50) -> list[dict] | None:
        """A sweep's finished and failed runs as plain dicts (run_id, status, config_group,
        config_hash, seed, start_time, final_loss; the loss curve of the first `curves`
        finished ones); None: the backend keeps no runs (the sweep reads its run directories)."""
        return None

    def run_dir_of(self, run_id: str) -> str | None:
        """The run directory of a recorded run (resume=<run id>); None: unknown."""
        return None

    def runs(self, parent_id: str | None = None) -> list[dict]:
        """The experiment's runs (or one sweep's) as plain dicts: run_id, status, name, parent_id
        (a sweep's or a replicated run's, or None), tags, params, metrics, final_loss (runner.compare)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no runs to list")

    def whole_run_id(self, run_id: str) -> str:
        """The id of the run that `run_id` names: a whole id, or its first characters as
        runner.compare shows them. LookupError when no run, or several, start with them."""
        return run_id

    def fetch(self, run_id: str, names: tuple, dst: Path) -> dict:
        """The run's files among `names` (those it has) downloaded into dst; its tags. LookupError
        if there is no such run."""
        raise NotImplementedError(f"{type(self).__name__} keeps no runs to fetch")

    def look(self) -> str | None:
        """How a person looks at the runs (a command line), if the backend has a viewer."""
        return None

    def where(self) -> str:
        """The store, as error messages name it."""
        return type(self).__name__

    @staticmethod
    def preimport(settings: dict) -> None:
        """Import what the backend's events need (the worker does it while it waits). `settings`:
        the backend's settings as far as the command line and its YAML say before Hydra composes
        (strings from the command line; interpolations unresolved)."""

    # --- the worker's bookkeeping ----------------------------------------------------------------
    def state(self) -> dict:
        """What a command's proxy keeps of this backend between calls (runner/tracking/worker.py)."""
        return {"run_id": self.run_id, "reaped": list(self.reaped)}

    def restore(self, state: dict) -> None:
        """Continue from a proxy's state (a new worker takes over from one that died)."""
        self.run_id = state.get("run_id")

    def adopt(self) -> str | None:
        """The run this command opened, found in the store (a new worker after one died); its id."""
        return self.run_id
