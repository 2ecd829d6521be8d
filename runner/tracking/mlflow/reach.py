"""Reaching a tracking store before any fit, within one overall deadline: an MLflow server's
/health, a database server's first byte, a sqlite file's folder. No mlflow import (the command's
process checks; the tracking worker does the MLflow work)."""
from __future__ import annotations

import os
from pathlib import Path

from runner.errors import TrackingError

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
        try:
            writable(path)
        except OSError as e:
            raise TrackingError(f"the tracking store {uri} is not writable ({e.strerror or e}): set tracking.uri "
                                "to a writable place") from None


def writable(path: Path) -> None:
    """OSError unless the store's file, its lock file beside it and a new file in its folder can be
    written: tried, not asked (os.access says yes to root everywhere, /sys and read-only mounts
    included; the store then failed after the fit). Nothing is written; a probe file is removed."""
    import tempfile

    path = path.resolve()  # where the store's lock goes (store_lock): a linked store's own folder
    for existing in (path, path.with_name(path.name + ".lock")):
        if existing.exists():
            with open(existing, "r+b"):
                pass
    fd, probe = tempfile.mkstemp(dir=path.parent, prefix=".runner-probe-")
    try:
        os.close(fd)
    finally:
        os.unlink(probe)


def check_timeout(value) -> float:
    """tracking.timeout / --timeout (a string on the command line): seconds, a positive number
    (runner.schema's range, said as a TrackingError)."""
    from runner import schema
    from runner.errors import ConfigError

    try:
        seconds = float(value) if isinstance(value, str) else value
    except ValueError:
        seconds = value
    try:
        return float(schema.TRACKING["tracking.timeout"]("tracking.timeout", seconds))
    except ConfigError as e:
        raise TrackingError(str(e).replace(f"got {seconds!r}", f"got {value!r}")) from None
