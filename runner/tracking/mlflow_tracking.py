"""tracking=default: the MLflow backend of runner.tracking.base.Tracking (`MlflowTracking`, also
known as `Tracker`): the command's handle. The MLflow work (`Store` in
store.py: the import and the store/experiment set-up, about 2.5 s of CPU, and every run's
logging, a few `log_batch` calls each) runs in the tracking worker process
(runner/tracking/worker.py), beside the JAX compile and fit rather than sharing the GIL with them.
This module imports neither mlflow nor store.py.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path

from runner.errors import TrackingError
from runner.tracking.base import Tracking

# MLflow 3 sends usage telemetry and waits for it at exit (about 1 s per process where the
# network is closed); off unless the user sets MLFLOW_DISABLE_TELEMETRY=false. Set here too: the
# worker inherits this process's environment.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

#: tracking URIs MLflow takes by name alone (anything else without a scheme is a file-store path)
MLFLOW_NAMED_URIS = ("databricks", "databricks-uc", "uc")
REACH_TIMEOUT_S = 5  # an unreachable server fails in seconds, not after MLflow's minutes of retries


def check_reachable(uri: str) -> None:
    """Fail fast with the URI in the message: an http(s) server that does not answer /health, a
    sqlite store whose directory cannot be created or written."""
    import urllib.error
    import urllib.request

    if uri.startswith(("http://", "https://")):
        import base64
        import urllib.parse

        from runner.redact import redact

        parts = urllib.parse.urlsplit(uri)
        request = urllib.request.Request(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
                                         .geturl().rstrip("/") + "/health") if parts.hostname else None
        if request is not None and parts.username is not None:  # user:password@ as MLflow's client sends it
            token = base64.b64encode(f"{urllib.parse.unquote(parts.username)}:"
                                     f"{urllib.parse.unquote(parts.password or '')}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            if request is None:
                raise ValueError("no host in the URI")
            urllib.request.urlopen(request, timeout=REACH_TIMEOUT_S).read()
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = redact(str(getattr(e, "reason", e)))
            raise TrackingError(f"tracking server {redact(uri)} is unreachable ({reason}): start it "
                                f"(mlflow server ...) or set tracking.uri") from None
    elif uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):]).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrackingError(f"cannot create the tracking store {uri}: {e.strerror or e}: "
                                "set tracking.uri to a writable place") from None
        if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise TrackingError(f"the tracking store {uri} is not writable: set tracking.uri to a writable place")



class MlflowTracking(Tracking):
    """The command's handle on MLflow. Each call runs in the tracking worker process and returns
    its answer (or raises its exception) here; `start` alone does not wait, so the store is set
    up and the run created while the fit compiles. The worker's `Store` does the work."""

    _handles = itertools.count(1)

    def __init__(self, uri: str, experiment: str, max_points_per_curve: int | None = 2000,
                 log_model: bool = True):
        self.uri, self.experiment = uri, experiment
        self.max_points, self.log_model = max_points_per_curve, log_model
        self.experiment_id: str | None = None
        self.run_id: str | None = None
        self.reaped: list[str] = []
        self._handle = next(Tracker._handles)
        self._pending: list[int] = []
        self._worker = None  # this process's worker when first used; if it dies, so does this tracker

    def _send(self, method: str, *args, wait: bool = True, **kwargs) -> int:
        from runner.tracking.worker import WorkerGone, client

        if self._worker is None:
            self._worker = client()
        try:
            return self._worker.send(self._handle, (self.uri, self.experiment), method, args, kwargs,
                                     {"run_id": self.run_id}, wait=wait)
        except WorkerGone as e:
            raise TrackingError(f"{e}; nothing more could be logged to {self.uri}") from None

    def _collect(self, req: int):
        from runner.tracking.worker import WorkerGone

        try:
            value, state = self._worker.result(req)
        except WorkerGone as e:
            raise TrackingError(f"{e}; nothing more could be logged to {self.uri}") from None
        self.run_id, self.experiment_id = state["run_id"], state["experiment_id"]
        self.reaped = state["reaped"]
        return value

    def _call(self, method: str, *args, **kwargs):
        return self._collect(self._send(method, *args, **kwargs))

    def submit(self, method: str, **kwargs) -> None:
        """Call `method` without waiting (the worker does it while this process goes on);
        flush() waits for every submitted call and raises the first error."""
        self._pending.append(self._send(method, **kwargs))

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        errors = []
        for req in pending:
            try:
                self._collect(req)
            except Exception as e:
                errors.append(e)
        if errors:
            raise errors[0]

    def start(self, open_run: dict | None = None) -> "Tracker":
        """Set up (in the worker, without waiting); with `open_run` (tags), also create the run,
        RUNNING, so that an interrupted or killed fit leaves a record."""
        self._send("prepare", open_run, wait=False)
        return self

    def wait(self) -> None:
        self._call("wait")

    def open(self, tags: dict) -> str:
        return self._call("open", tags)

    def end(self, status: str, **kwargs) -> str | None:
        return self._call("end", status, **kwargs)

    def find_finished(self, config_hash: str) -> str | None:
        return self._call("find_finished", config_hash)

    def open_job(self, tags: dict, config_hash: str, finished: bool = True) -> str | None:
        return self._call("open_job", tags, config_hash, finished)

    def open_parent(self, **kwargs) -> tuple[str, bool]:
        return self._call("open_parent", **kwargs)

    def children(self, parent_id: str | None, curves: int = 50) -> list[dict]:
        return self._call("children", parent_id, curves)

    def finish_parent(self, parent_id: str | None, **kwargs) -> None:
        return self._call("finish_parent", parent_id, **kwargs)

    def log_run(self, **kwargs) -> str:
        kwargs.setdefault("max_points", self.max_points)
        return self._call("log_run", **kwargs)

    def log_child(self, child, *, parent_id: str | None, tags: dict, params: dict) -> None:
        """Submitted to the worker, which logs it while this process goes on (flush waits)."""
        self.submit("log_run", tags={**tags, **child.tags, "mlflow.parentRunId": parent_id,
                                     "mlflow.runName": child.name},
                    params={**params, **child.params}, scalars=child.scalars, curves=child.curves,
                    artifact_dir=child.artifact_dir, artifacts=child.artifacts, max_points=self.max_points,
                    curve_steps=child.curve_steps)

    def check(self) -> None:
        """Everything the store will refuse, before any fit: an empty or file-store URI, an empty
        experiment name, an unreachable server, an unwritable sqlite file."""
        uri, experiment = self.uri, self.experiment
        if not isinstance(uri, str) or not uri.strip():
            raise TrackingError("tracking.uri is empty: set it to a store, e.g. sqlite:///mlflow.db "
                                "(or tracking=none for no store)")
        if uri.startswith("file:") or (":" not in uri and uri not in MLFLOW_NAMED_URIS):  # a path
            if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() != "true":
                raise TrackingError(f"tracking.uri={uri} is a file store, which MLflow 3 refuses: use "
                                    "sqlite:///mlflow.db (or set MLFLOW_ALLOW_FILE_STORE=true)")
        if not isinstance(experiment, str) or not experiment.strip():
            raise TrackingError("tracking.experiment is empty: name the MLflow experiment, e.g. tracking.experiment=runner")
        check_reachable(uri)

    def check_params(self, params: dict) -> None:
        """Param names MLflow stores: alphanumerics, _ - . space : / (a `+a$b=1` override is not one)."""
        import re

        bad = sorted(k for k in params if not re.fullmatch(r"[\w\-. :/]{1,250}", k))
        if bad:
            raise TrackingError(f"config key {bad[0]!r} cannot be an MLflow param name (letters, digits, "
                                "_ - . space : / only, at most 250): rename or drop that override")

    def look(self) -> str:
        from runner.redact import redact

        return f"mlflow ui --backend-store-uri {redact(self.uri)}"


Tracker = MlflowTracking  # the name tests, benchmarks and older code use
