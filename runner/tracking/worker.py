"""The tracking worker: a second process that does a command's MLflow work.

MLflow's import and store set-up (~2.5 s of CPU) and the logging of every run are Python work.
In a thread they shared the GIL with the fit's tracing and the figures, so they ran one after
the other on a 2-core machine; in their own process they run beside them. The command's process
(`Tracker`, runner/tracking/__init__.py) sends each call here and waits for its answer, so the
store is written in the same order and by the time the command returns.

- started once per process that tracks (the CLI starts it first thing, so MLflow imports while
  JAX does); a forked child starts its own.
- ignores SIGINT and SIGTERM: a Ctrl-C reaches the whole process group, and the command ends its
  runs KILLED through this process, so it must outlive the signal. It exits when the command's
  end of the pipe closes (also when the command is SIGKILLed: its RUNNING run is then reaped
  by a later command, as before).
- answers (request id, ok, value or exception, run state); an exception that does not pickle
  comes back as a RuntimeError with its type name and message.
"""
from __future__ import annotations

import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path

PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)


class WorkerGone(Exception):
    """The tracking worker exited (it was killed, or crashed)."""


class Client:
    """The command's side: requests go through a sender thread and answers come back through a
    receiver thread, so a Ctrl-C while the command waits never cuts a message in half."""

    def __init__(self):
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runner.tracking.worker", str(req_r), str(rep_w), str(os.getpid())],
            pass_fds=(req_r, rep_w), stdin=subprocess.DEVNULL, env=env)
        os.close(req_r)
        os.close(rep_w)
        self.owner = os.getpid()
        self._out = Connection(req_w, readable=False)
        self._in = Connection(rep_r, writable=False)
        self._outbox: queue.Queue = queue.Queue()
        self._replies: dict = {}
        self._waiting: set = set()
        self._gone: str | None = None
        self._cond = threading.Condition()
        self._next = 0
        threading.Thread(target=self._send_loop, name="tracking-send", daemon=True).start()
        threading.Thread(target=self._recv_loop, name="tracking-recv", daemon=True).start()

    def _send_loop(self) -> None:
        while True:
            msg = self._outbox.get()
            if msg is None:
                self._out.close()
                return
            try:
                self._out.send_bytes(msg)
            except OSError:
                return

    def _recv_loop(self) -> None:
        while True:
            try:
                req, ok, value, state = pickle.loads(self._in.recv_bytes())
            except (EOFError, OSError):
                with self._cond:
                    self._gone = f"the tracking worker process exited (code {self.proc.wait()})"
                    self._cond.notify_all()
                return
            with self._cond:
                if req in self._waiting:
                    self._replies[req] = (ok, value, state)
                    self._cond.notify_all()

    def send(self, handle: int, target: tuple, method: str, args=(), kwargs=None, state=None,
             wait: bool = True) -> int:
        with self._cond:
            if self._gone:
                raise WorkerGone(self._gone)
            self._next += 1
            req = self._next
            if wait:
                self._waiting.add(req)
        self._outbox.put(pickle.dumps((req, handle, target, os.getcwd(), method, args, kwargs or {}, state)))
        return req

    def result(self, req: int):
        """(value, state) of request `req`; its exception raised here."""
        with self._cond:
            while req not in self._replies:
                if self._gone:
                    raise WorkerGone(self._gone)
                self._cond.wait()
            self._waiting.discard(req)
            ok, value, state = self._replies.pop(req)
        if not ok:
            raise value
        return value, state

    def close(self, timeout: float = 120) -> None:
        """Close the pipe and let the worker finish what it was asked (it exits at end of input)."""
        self._outbox.put(None)
        try:
            self.proc.wait(timeout)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            pass


_CLIENT: Client | None = None
_LOCK = threading.Lock()


def client() -> Client:
    """This process's worker, started on first use (a forked child gets its own)."""
    global _CLIENT
    with _LOCK:
        if _CLIENT is None or _CLIENT.owner != os.getpid() or _CLIENT._gone:
            import atexit

            _CLIENT = Client()
            atexit.register(_CLIENT.close)
        return _CLIENT


def _reply(req: int, ok: bool, value, state: dict) -> bytes:
    """The answer as bytes the command can load: a value or an exception that does not pickle
    (or unpickle: an exception whose __init__ wants other arguments) becomes a RuntimeError with
    its type name and message, never a message the command's receiver cannot read."""
    try:
        payload = pickle.dumps((req, ok, value, state))
        pickle.loads(payload)
        return payload
    except Exception as e:
        bad = value if not ok else e
        return pickle.dumps((req, False, RuntimeError(f"{type(bad).__name__}: {bad}"), state))


def serve(req_fd: int, rep_fd: int, owner: int) -> None:
    """The worker's loop: one request at a time, in order, until the command's pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from runner.redact import RedactingStream, mask_log_records

    sys.stdout, sys.stderr = RedactingStream(sys.stdout), RedactingStream(sys.stderr)  # MLflow prints run URLs
    mask_log_records()
    import runner.tracking.mlflow.store as tracking

    tracking.OWNER_PID = owner  # runs are tagged with the command's pid (stale-run reaping)
    inbox = Connection(req_fd, writable=False)
    out = Connection(rep_fd, readable=False)
    threading.Thread(target=tracking.preimport, name="mlflow-import", daemon=True).start()
    stores: dict = {}
    while True:
        try:
            req, handle, target, cwd, method, args, kwargs, state = pickle.loads(inbox.recv_bytes())
        except (EOFError, OSError):
            os._exit(0)  # the command is done (or gone); an unfinished import is of no use
        store = stores.get(handle)
        if store is None:
            store = stores[handle] = tracking.Store(*target)
        if state and state.get("run_id") is not None:  # the command named the run (sweep.py)
            store.run_id = state["run_id"]
        try:
            if cwd != os.getcwd():
                os.chdir(cwd)
            value, ok = getattr(store, method)(*args, **kwargs), True
        except BaseException as e:
            value, ok = e, False
        state = {"run_id": store.run_id, "experiment_id": store.experiment_id, "reaped": list(store.reaped)}
        try:
            out.send_bytes(_reply(req, ok, value, state))
        except OSError:
            pass  # the command is gone; finish the remaining requests anyway


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
