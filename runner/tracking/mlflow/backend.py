"""tracking=mlflow: the MLflow backend of runner.tracking.base.Tracking (`MlflowTracking`): the
command's handle. The MLflow work (`Store` in
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
REACH_TIMEOUT_S = 5.0  # one overall deadline for reaching a store (tracking.timeout, --timeout)
#: default ports of the SQL databases MLflow stores runs in (dialect of the URI's scheme)
DB_PORTS = {"postgresql": 5432, "postgres": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433}
# PostgreSQL's SSLRequest (length 8, code 80877103): a live server answers it with one byte
PG_SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")


def within(seconds: float, fn):
    """fn() under one overall deadline: its value or exception, or TimeoutError when it has not
    returned in `seconds` (it goes on in a daemon thread, which the process does not wait for).
    Socket timeouts are per read: a server that drips a byte every few seconds never trips them."""
    import threading

    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 (re-raised in the caller's thread)
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True, name="runner-reach")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _health(uri: str, seconds: float) -> None:
    """GET /health of an MLflow server, with the URI's user:password as MLflow's client sends it."""
    import base64
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(uri)
    if not parts.hostname:
        raise ValueError("no host in the URI")
    request = urllib.request.Request(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
                                     .geturl().rstrip("/") + "/health")
    if parts.username is not None:
        token = base64.b64encode(f"{urllib.parse.unquote(parts.username)}:"
                                 f"{urllib.parse.unquote(parts.password or '')}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=seconds) as response:
        response.read()


def _database(uri: str, seconds: float) -> None:
    """A SQL database's server answers: TCP connect, then a first byte of its protocol
    (PostgreSQL answers an SSLRequest, MySQL greets first). Unix sockets and other dialects: no check."""
    import socket
    import urllib.parse

    parts = urllib.parse.urlsplit(uri)
    dialect = parts.scheme.split("+", 1)[0]
    if dialect not in DB_PORTS or not parts.hostname:
        return
    with socket.create_connection((parts.hostname, parts.port or DB_PORTS[dialect]), timeout=seconds) as sock:
        if dialect in ("postgresql", "postgres"):
            sock.sendall(PG_SSL_REQUEST)
        if dialect in ("postgresql", "postgres", "mysql", "mariadb") and not sock.recv(1):
            raise ConnectionError("the server closed the connection")


def check_reachable(uri: str, timeout: float = REACH_TIMEOUT_S, create: bool = True) -> None:
    """Fail fast, in one line with the URI (its password masked): an http(s) server that does not
    answer /health, a database server that does not answer, all within one overall deadline of
    `timeout` seconds; a sqlite store whose folder cannot be created or written (`create`), or,
    for the side commands that only read (`create=False`), a sqlite file that does not exist."""
    from runner.redact import redact

    if uri.startswith(("http://", "https://")) or uri.split(":", 1)[0].split("+", 1)[0] in DB_PORTS:
        kind = "tracking server" if uri.startswith("http") else "database"
        try:
            within(timeout, lambda: (_health if kind == "tracking server" else _database)(uri, timeout))
        except (OSError, ValueError) as e:  # URLError, ConnectionError and TimeoutError are OSErrors
            cause = getattr(e, "reason", None) or e
            reason = f"no answer within {timeout:g} s" if isinstance(cause, TimeoutError) else redact(str(cause))
            raise TrackingError(f"{kind} {redact(uri)} is unreachable ({reason}): start it "
                                f"{'(mlflow server ...) ' if kind == 'tracking server' else ''}or set tracking.uri") from None
    elif uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):]).expanduser()
        if not create:
            if not path.is_file():
                raise TrackingError(f"no tracking store at {path} ({uri}): check the path, or run "
                                    "python -m runner first")
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrackingError(f"cannot create the tracking store {uri}: {e.strerror or e}: "
                                "set tracking.uri to a writable place") from None
        if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise TrackingError(f"the tracking store {uri} is not writable: set tracking.uri to a writable place")


def check_timeout(value) -> float:
    """tracking.timeout / --timeout: seconds, a positive number."""
    import math

    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if isinstance(value, bool) or not math.isfinite(seconds) or seconds <= 0:
        raise TrackingError(f"tracking.timeout must be a positive number of seconds, got {value!r}")
    return seconds


class MlflowTracking(Tracking):
    """The command's handle on MLflow. Each call runs in the tracking worker process and returns
    its answer (or raises its exception) here; `start` alone does not wait, so the store is set
    up and the run created while the fit compiles. The worker's `Store` does the work."""

    _handles = itertools.count(1)

    def __init__(self, uri: str, experiment: str, max_points_per_curve: int | None = 2000,
                 log_model: bool = True, timeout: float = REACH_TIMEOUT_S):
        self.uri, self.experiment, self.timeout = uri, experiment, timeout
        self.max_points, self.log_model = max_points_per_curve, log_model
        self.experiment_id: str | None = None
        self.run_id: str | None = None
        self.reaped: list[str] = []
        self._handle = next(MlflowTracking._handles)
        self._pending: list[tuple] = []  # (request, method, kwargs) submitted, not yet answered
        self._worker = None  # this process's worker, when first used
        self._restarted = False  # a worker that dies is replaced once (see _again)

    def _send(self, method: str, *args, wait: bool = True, **kwargs) -> int:
        from runner.tracking.worker import client

        if self._worker is None:
            self._worker = client()
        return self._worker.send(self._handle, (self.uri, self.experiment), method, args, kwargs,
                                 {"run_id": self.run_id}, wait=wait)

    def _collect(self, req: int):
        value, state = self._worker.result(req)
        self.run_id, self.experiment_id = state["run_id"], state["experiment_id"]
        self.reaped = state["reaped"]
        return value

    def _again(self, gone, calls: list):
        """The worker exited (killed, crashed) while this command still had things to log: one
        fresh worker takes over the same run (named by its id, still owned by this command's pid)
        and does `calls` [(method, args, kwargs)] again, so the run ends as what happened instead
        of staying RUNNING. Returns the last call's value; a second loss is a TrackingError."""
        import sys

        from runner.tracking.worker import WorkerGone, client

        if self._restarted:
            raise TrackingError(f"{gone}; nothing more could be logged to {self.uri}") from None
        self._restarted = True
        self._worker = client()  # a new process: the old one is gone
        value = None
        try:
            self._collect(self._send("adopt"))  # the run this command opened, if the old worker had made it
            print(f"runner: {gone}; a new tracking worker goes on"
                  + (f" with run {self.run_id}" if self.run_id else ""), file=sys.stderr)
            for method, args, kwargs in calls:
                value = self._collect(self._send(method, *args, **kwargs))
        except WorkerGone as e:
            raise TrackingError(f"{e}; nothing more could be logged to {self.uri}") from None
        return value

    def _call(self, method: str, *args, **kwargs):
        from runner.tracking.worker import WorkerGone

        try:
            return self._collect(self._send(method, *args, **kwargs))
        except WorkerGone as e:
            return self._again(e, [(method, args, kwargs)])

    def submit(self, method: str, **kwargs) -> None:
        """Call `method` without waiting (the worker does it while this process goes on);
        flush() waits for every submitted call and raises the first error."""
        from runner.tracking.worker import WorkerGone

        try:
            self._pending.append((self._send(method, **kwargs), method, kwargs))
        except WorkerGone:
            self._pending.append((None, method, kwargs))

    def flush(self) -> None:
        from runner.tracking.worker import WorkerGone

        pending, self._pending = self._pending, []
        errors, lost = [], []
        for req, method, kwargs in pending:
            try:
                if req is None:
                    raise WorkerGone("the tracking worker process exited")
                self._collect(req)
            except WorkerGone as e:
                lost.append((e, (method, (), kwargs)))
            except Exception as e:
                errors.append(e)
        if lost:
            self._again(lost[0][0], [call for _, call in lost])
        if errors:
            raise errors[0]

    def start(self, open_run: dict | None = None) -> "MlflowTracking":
        """Set up (in the worker, without waiting); with `open_run` (tags), also create the run,
        RUNNING, so that an interrupted or killed fit leaves a record."""
        self._send("prepare", open_run, wait=False)
        return self

    def wait(self) -> None:
        self._call("wait")

    def run_dir_of(self, run_id: str) -> str | None:
        return self._call("run_dir_of", run_id)

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
        check_reachable(uri, check_timeout(self.timeout))

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

