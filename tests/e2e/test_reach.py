"""Every command that talks to a store checks it once, under one overall deadline
(tracking.timeout / --timeout), and says in one line what it could not reach: exit 2, no
traceback, nothing created. Real loopback servers: one that accepts and never answers, one that
drips a byte a second (a per-read socket timeout never trips), a refused port; PostgreSQL and
MySQL URIs to a closed port and to a silent server."""
import socket
import sys
import threading

import pytest
from conftest import run_cli

import subprocess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Loopback:
    """A TCP server on 127.0.0.1 that accepts connections and then stays silent (`drip=False`) or
    sends one byte of an HTTP answer every `every` seconds, forever."""

    def __init__(self, drip=False, every=1.0):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.drip, self.every, self.held, self.stop = drip, every, [], threading.Event()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.held.append(conn)
            if self.drip:
                threading.Thread(target=self.dribble, args=(conn,), daemon=True).start()

    def dribble(self, conn):
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000
        for byte in answer:
            if self.stop.wait(self.every):
                return
            try:
                conn.send(bytes([byte]))
            except OSError:
                return

    def close(self):
        self.stop.set()
        for conn in self.held:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent():
    server = Loopback()
    yield server
    server.close()


@pytest.fixture
def dripping():
    server = Loopback(drip=True, every=1.0)
    yield server
    server.close()


def commands(uri, tmp_path):
    """The main command, runner.compare and runner.predict, each with a 2 s deadline."""
    return {
        "runner": [sys.executable, "-m", "runner", "model=coin", f"tracking.uri={uri}", "tracking.timeout=2",
                   f"hydra.run.dir={tmp_path}/run"],
        "compare": [sys.executable, "-m", "runner.compare", "--uri", uri, "--timeout", "2"],
        "predict": [sys.executable, "-m", "runner.predict", "run_id=abc", f"tracking.uri={uri}", "tracking.timeout=2"],
    }


def check_one_line(tmp_path, uri, shown, reason):
    for name, argv in commands(uri, tmp_path).items():
        # that it returns at all is the deadline kept: the dripping server sends its 1040-byte answer a byte a second
        # (17 minutes; no per-read socket timeout trips), so a command without its overall deadline
        # would still be reading when subprocess.run gives up (TimeoutExpired: the test fails)
        proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        lines = proc.stderr.strip().splitlines()
        prefix = "runner" if name == "runner" else f"runner.{name}"
        assert proc.returncode == 2, (name, proc.stderr)
        assert len(lines) == 1 and lines[0].startswith(f"{prefix}: error: ") and f"{shown} is unreachable ({reason}" in lines[0], (name, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / "run" / "metrics.json").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_server_that_accepts_and_never_answers(tmp_path, silent):
    uri = f"http://127.0.0.1:{silent.port}"
    check_one_line(tmp_path, uri, f"tracking server {uri}", "no answer within 2 s")


def test_a_health_check_that_drips_a_byte_a_second(tmp_path, dripping):
    uri = f"http://127.0.0.1:{dripping.port}"
    check_one_line(tmp_path, uri, f"tracking server {uri}", "no answer within 2 s")


def test_a_refused_port(tmp_path):
    uri = f"http://alice:hunter2@127.0.0.1:{free_port()}"
    check_one_line(tmp_path, uri, f"tracking server {uri.replace('hunter2', '***')}", "[Errno 111] Connection refused")


@pytest.mark.parametrize("scheme", ["postgresql+psycopg2", "mysql+pymysql"])
def test_a_database_on_a_closed_port(tmp_path, scheme):
    uri = f"{scheme}://alice:hunter2@127.0.0.1:{free_port()}/db"
    check_one_line(tmp_path, uri, f"database {uri.replace('hunter2', '***')}", "[Errno 111] Connection refused")


def test_a_database_that_accepts_and_never_answers(tmp_path, silent):
    uri = f"postgresql://alice:hunter2@127.0.0.1:{silent.port}/db"
    check_one_line(tmp_path, uri, f"database {uri.replace('hunter2', '***')}", "no answer within 2 s")


@pytest.mark.parametrize("value,shown", [("0", "0"), ("-1", "-1"), ("abc", "'abc'"), ("nan", "nan")])
def test_a_bad_timeout_is_one_line(tmp_path, value, shown):
    proc = run_cli(["model=coin", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"tracking.timeout={value}",
                    f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"runner: error: tracking.timeout must be a positive number of seconds, got {shown}"]


def test_side_commands_never_create_a_store(tmp_path):
    """A mistyped sqlite path is one line, exit 2: compare and predict only read."""
    uri = f"sqlite:///{tmp_path}/mlfow.db"
    said = {side: f"runner.{side}: error: no MLflow store at {tmp_path}/mlfow.db (no such file): check --uri / "
                  "tracking.uri= (default sqlite:///mlflow.db, in this folder)" for side in ("compare", "predict")}
    for name, argv in list(commands(uri, tmp_path).items())[1:]:
        proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines() == [said[name]]
        assert not (tmp_path / "mlfow.db").exists()
