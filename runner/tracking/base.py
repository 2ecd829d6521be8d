"""The tracking interface: what a run and a sweep tell the place that records them.

Every method has a do-nothing default (the shape of Sacred's RunObserver), so a backend
implements what it records and nothing else. A backend is a class named by `_target_` in
conf/tracking/<name>.yaml; `runner.tracking.from_config` builds it. Backends: `mlflow`
(runner/tracking/mlflow/backend.py, the default: the store in a worker process) and `none`
(runner/tracking/none.py: the run directory only, no MLflow import).
Calls happen in this order: check (before any fit) -> start -> [find_finished] -> open or open_job
(a sweep's job) -> log_run or end -> log_child... -> flush. A sweep: open_parent (before its
jobs) -> children -> finish_parent.
"""
from __future__ import annotations

import re
from pathlib import Path


def metric_safe(label: str) -> str:
    """A label as MLflow accepts it in a metric name (alphanumerics, _ - . space : /)."""
    return re.sub(r"[^\w.\- :/]", "-", label)


class Tracking:
    #: the run this command opened (None until `start` opens one, or for a backend without runs)
    run_id: str | None = None
    #: runs a backend found left RUNNING by a process that is gone, and ended FAILED
    reaped: list = []
    #: per-step curves logged at most this many points each (all steps stay in metrics.json)
    max_points: int | None = None
    #: log the fit as a model (MLflow pyfunc) where the backend can
    log_model: bool = False

    def check(self) -> None:
        """Raise runner.errors.TrackingError (one line) if the backend cannot be reached or
        written: called before any fit, so that nothing is fitted for nothing."""

    def check_params(self, params: dict) -> None:
        """Raise TrackingError (one line) for a param the backend cannot store: called after the
        config is built, before any fit."""

    def start(self, open_run: dict | None = None) -> "Tracking":
        """Get ready (a backend may do it in the background); with `open_run` (tags), open this
        command's run now, so that an interrupted fit leaves a record."""
        return self

    def run_dir_of(self, run_id: str) -> str | None:
        """The run directory (tag run_dir) of a logged run, for resume=<run id>; None: unknown."""
        return None

    def open(self, tags: dict) -> str | None:
        """Open this command's run (a backend started without open_run)."""
        return None

    def find_finished(self, config_hash: str) -> str | None:
        """The id of a finished run with this config hash (a sweep skips its job), if any."""
        return None

    def open_job(self, tags: dict, config_hash: str, finished: bool = True) -> str | None:
        """A sweep's job: open its run (as `open`) unless another run of the same config makes it
        redundant (FINISHED when `finished`, or RUNNING in a live process: the same sweep started
        twice at once); then return that run's id and open nothing."""
        self.open(tags)
        return None

    def log_run(self, *, tags: dict, params: dict, scalars: dict, curves: dict, artifact_dir: Path,
                artifacts: list, status: str = "FINISHED", dataset: dict | None = None,
                model: dict | None = None, into_open_run: bool = True, max_points: int | None = None,
                curve_steps: list | None = None) -> str | None:
        """The run's record, into the opened run (or a new one); returns its id. `curve_steps`:
        the step of each curve point (None: point i is step i)."""
        return None

    def log_child(self, child, *, parent_id: str | None, tags: dict, params: dict) -> None:
        """A run under the run `parent_id` (an SVI replicate, runner.inference.base.Child); may be
        asynchronous: flush() waits for every child and raises the first error."""

    def flush(self) -> None:
        """Wait for what log_child started."""

    def end(self, status: str, params: dict | None = None, tags: dict | None = None,
            artifact_dir: Path | None = None, artifacts=(), children: bool = False) -> str | None:
        """End the opened run with `status` (KILLED, FAILED), recording what is there; `children`:
        its child runs still running (an interrupted sweep's jobs in other processes) too."""
        return None

    def open_parent(self, *, name: str, sweep_hash: str, tags: dict, reuse: bool) -> tuple[str | None, bool]:
        """A sweep's parent run (an earlier one of the same sweep when `reuse`): (id, reused)."""
        return None, False

    def children(self, parent_id: str | None, curves: int = 50) -> list[dict] | None:
        """A sweep's finished and failed children as plain dicts (run_id, status, config_group,
        config_hash, seed, start_time, final_loss, and the loss curve of the first `curves`
        finished ones); None: the backend keeps no runs, the sweep reads its run directories."""
        return None

    def finish_parent(self, parent_id: str | None, *, scalars: dict, artifact_dir: Path, artifacts: list,
                      tags: dict | None = None, table: dict | None = None, table_file: str | None = None,
                      status: str = "FINISHED") -> None:
        """The sweep's aggregate (runner.sweep) onto its parent run: metrics `scalars`, `tags`,
        `table` (column -> values) as a table artifact `table_file`, the files; then `status`."""

    def look(self) -> str | None:
        """How a person looks at the runs (a command line), if the backend has a viewer."""
        return None
