"""The tracking worker: any backend's events, in a second process.

A backend's work can be slow Python (MLflow's import and store set-up, ~2.5 s of CPU, and the
logging of every run). In a thread it shared the GIL with the fit's tracing and the figures, so
on a 2-core machine they ran one after the other; in their own process they run beside them.
`Background` (the command's side) wraps a backend whose class says `background = True`: it sends
each event here with the backend's class and settings, and waits for the answer, so the store is
written in the same order and by the time the command returns. This process builds the same
backend from its class and settings and calls it.

- started once per process that tracks (the CLI starts it first thing, `start_early`, so the
  backend imports while JAX does); a forked child starts its own.
- ignores SIGINT and SIGTERM: a Ctrl-C reaches the whole process group, and the command ends its
  runs KILLED through this process, so it must outlive the signal. It exits when the command's
  end of the pipe closes (also when the command is SIGKILLed: its RUNNING run is then reaped
  by a later command).
- a worker that dies (killed, crashed) is replaced once: the new one adopts the command's open run
  (backend.adopt) and does the lost calls again; a second death is one TrackingError line.
- answers (request id, ok, value or exception, backend state); an exception that does not pickle
  comes back as a RuntimeError with its type name and message.
"""
from __future__ import annotations

import itertools
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import NamedTuple

from runner.errors import TrackingError, describe
from runner.tracking.base import Tracking

OWNER_ENV = "RUNNER_TRACKING_OWNER"  # in the worker: the pid of the command it works for


def owner_pid() -> int:
    """The pid of the command a backend works for (its runs are tagged with it: stale-run reaping)."""
    return int(os.environ.get(OWNER_ENV) or os.getpid())


def host() -> str:
    """This machine's name, as runs and trials are tagged with it beside their pid (runner.host)."""
    import socket

    return socket.gethostname()


def alive(pid: int) -> bool:
    """Whether process `pid` of this machine is running (a run or trial it left RUNNING is stale
    once it is gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkerGone(Exception):
    """The tracking worker exited (it was killed, or crashed)."""


class Call(NamedTuple):
    """One request: the backend (its handle in this command, its class and settings), the event or
    query, its arguments, and the state the command's side keeps of the backend."""
    handle: int
    target: str
    settings: dict
    method: str
    args: tuple
    kwargs: dict
    state: dict


class Client:
    """The command's side of the pipe: requests go through a sender thread and answers come back
    through a receiver thread, so a Ctrl-C while the command waits never cuts a message in half."""

    def __init__(self, warm: tuple[str, dict] | None = None):
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        from runner.background import child_env

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runner.tracking.worker", str(req_r), str(rep_w), str(os.getpid())],
            pass_fds=(req_r, rep_w), stdin=subprocess.DEVNULL, env=child_env())
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
        if warm is not None:  # request 0: imports only, never answered (settings go through the pipe, not argv)
            self._outbox.put(pickle.dumps((0, os.getcwd(), Call(0, warm[0], warm[1], "preimport", (), {}, {}))))

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

    def send(self, call: Call) -> int:
        with self._cond:
            if self._gone:
                raise WorkerGone(self._gone)
            self._next += 1
            req = self._next
            self._waiting.add(req)
        self._outbox.put(pickle.dumps((req, os.getcwd(), call)))
        return req

    def result(self, req: int):
        """(value, state) of request `req`; its exception raised here. While it waits, this
        thread does the work queued for such waits (runner.background.when_idle: a fused sweep's
        next job's files while this job's run is logged here, on the worker's core)."""
        from runner import background

        while True:
            with self._cond:
                if req in self._replies:
                    self._waiting.discard(req)
                    ok, value, state = self._replies.pop(req)
                    break
                if self._gone:
                    raise WorkerGone(self._gone)
                if not background.idle_waiting():
                    self._cond.wait()
                    continue
            background.run_idle()  # outside the lock: the receiver stores the reply meanwhile
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


def client(warm: tuple[str, dict] | None = None) -> Client:
    """This process's worker, started on first use (a forked child gets its own). `warm`: a
    backend class and the settings known so far, whose `preimport(settings)` the new worker runs
    while it waits for its first request."""
    global _CLIENT
    with _LOCK:
        if _CLIENT is None or _CLIENT.owner != os.getpid() or _CLIENT._gone:
            import atexit

            _CLIENT = Client(warm)
            atexit.register(_CLIENT.close)
        return _CLIENT


#: the events and queries a Background backend forwards (those that return nothing useful too,
#: so the store is written in order and errors surface in the command)
FORWARDED = ("run_completed", "run_failed", "run_killed", "sweep_started",
             "sweep_completed", "sweep_failed", "sweep_killed", "sweep_updated", "finished_run", "final_loss_of", "children", "run_dir_of",
             "runs", "whole_run_id", "fetch", "adopt")


class Background(Tracking):
    """Any backend, run in the tracking worker: its events are sent there. `connect`, a single
    run's `run_started` and `child_logged` are sent without waiting (the store is set up and the
    run created while this process compiles the fit): the next call, or `flush`, collects their
    answers first and raises their error. A fused sweep job's record (`run_completed_later`) is
    logged while the command goes on to the next job: `settle()` collects it and gives its error
    to that job. `check`, `check_params` and `look` run here (they must
    not need the backend's heavy imports)."""

    _handles = itertools.count(1)

    def __init__(self, backend: Tracking, target: str, settings: dict):
        self.backend, self.target, self.settings = backend, target, settings
        self.reaped: list = []
        self._state: dict = {}
        self._handle = next(Background._handles)
        self._pending: list[tuple] = []  # (request or None, (method, args, kwargs)) sent, not yet answered
        self._worker: Client | None = None
        self._restarted = False  # a worker that dies is replaced once (see _again)

    def __getattr__(self, name):  # what the backend's state says (its own ids: MLflow's experiment_id)
        state = self.__dict__.get("_state") or {}
        if name in state:
            return state[name]
        raise AttributeError(name)

    @property
    def run_id(self):
        return self._state.get("run_id")

    def check(self, create: bool = True) -> None:
        self.backend.check(create)

    def check_params(self, params: dict) -> None:
        self.backend.check_params(params)

    def look(self) -> str | None:
        return self.backend.look()

    def where(self) -> str:
        return self.backend.where()

    def connect(self) -> None:
        self._later("connect")

    def run_started(self, start) -> str | None:
        """A sweep's job waits for the answer (a twin it yields to); a single run does not."""
        if start.yield_to_finished is not None:
            return self.call("run_started", start)
        self._later("run_started", start)
        return None

    def child_logged(self, record) -> None:
        self._later("child_logged", record)

    def settle(self) -> None:
        settle()

    def run_completed_later(self, record, failed) -> str | None:
        """A run opened in the worker (a sweep's job: its id is known): its record is sent and
        this returns at once, so the command goes on to its next job while the worker logs this
        one; `settle()` (the command's next call here, or the launcher's end) collects the answer
        and hands an error to `failed`. A run not opened yet: logged now."""
        if self.run_id is None:
            return self.run_completed(record)
        self.flush()  # what this backend sent before (its store set up, its run opened): answered
        run_id = self.run_id
        try:
            _DEFERRED.append((self, self._send("run_completed", record), record, failed))
        except WorkerGone as e:
            return self._again(e, [("run_completed", (record,), {})])
        return run_id

    def _later(self, method: str, *args) -> None:
        try:
            self._pending.append((self._send(method, *args), (method, args, {})))
        except WorkerGone:
            self._pending.append((None, (method, args, {})))

    def _send(self, method: str, *args, **kwargs) -> int:
        if self._worker is None:
            self._worker = client()
        return self._worker.send(Call(self._handle, self.target, self.settings, method, args, kwargs, self._state))

    def _collect(self, req: int):
        value, state = self._worker.result(req)
        self._state = state
        self.reaped = state.get("reaped", [])
        return value

    def call(self, method: str, *args, **kwargs):
        settle()  # the records of earlier jobs, logged while this command went on
        self.flush()  # what was sent without waiting, answered first
        try:
            return self._collect(self._send(method, *args, **kwargs))
        except WorkerGone as e:
            return self._again(e, [(method, args, kwargs)])

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        errors, lost = [], []
        for req, call in pending:
            try:
                if req is None:
                    raise WorkerGone("the tracking worker process exited")
                self._collect(req)
            except WorkerGone as e:
                lost.append((e, call))
            except Exception as e:
                errors.append(e)
        if lost:
            self._again(lost[0][0], [call for _, call in lost])
        if errors:
            raise errors[0]

    def _again(self, gone, calls: list):
        """The worker exited while this command still had things to record: one fresh worker adopts
        the same run (found in the store by this command's pid) and does `calls` again (not the
        run's opening, when it was opened), so the run ends as what happened instead of staying
        RUNNING. A second loss is a TrackingError."""
        if self._restarted:
            raise TrackingError(f"{gone}; nothing more could be logged to {self.backend.where()}") from None
        self._restarted = True
        self._worker = client()
        value = None
        try:
            adopted = self._collect(self._send("adopt"))
            print(f"runner: {gone}; a new tracking worker goes on" + (f" with run {adopted}" if adopted else ""),
                  file=sys.stderr)
            for method, args, kwargs in calls:
                if not (adopted and method == "run_started"):
                    value = self._collect(self._send(method, *args, **kwargs))
        except WorkerGone as e:
            raise TrackingError(f"{e}; nothing more could be logged to {self.backend.where()}") from None
        return value


#: (backend, request, record, failed): records sent without waiting (Background.run_completed_later)
_DEFERRED: list = []


def settle() -> None:
    """Wait for every record sent without waiting, in order; each one's error to its `failed`
    (a worker that died meanwhile: a new one adopts the run and logs the record again). A signal
    meanwhile waits (runner.lifecycle): a record is taken off the list once it is answered."""
    from runner import timing
    from runner.lifecycle import SIGNALS

    while _DEFERRED:
        backend, req, record, failed = _DEFERRED[0]
        if backend._worker is None or backend._worker.owner != os.getpid():  # a forked child's copy
            _DEFERRED.pop(0)
            continue
        error = None
        with SIGNALS.logging(), timing.phase("logging"):
            try:
                try:
                    backend._collect(req)
                except WorkerGone as e:
                    backend._again(e, [("run_completed", (record,), {})])
            except Exception as e:
                error = e
            _DEFERRED.pop(0)
        if error is not None:
            try:
                failed(error)
            except Exception as e:  # (its status file could not be written): said, not raised in another job
                print(f"runner: error: {describe(error)}; and then {describe(e)}", file=sys.stderr)
        if not SIGNALS.runs:
            SIGNALS.safe_point()  # outside a run a signal stops the command at once: now that the record is in


def _forward(name: str):
    def method(self, *args, **kwargs):
        return self.call(name, *args, **kwargs)

    method.__name__ = name
    method.__doc__ = getattr(Tracking, name).__doc__
    return method


for _name in FORWARDED:
    setattr(Background, _name, _forward(_name))


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


def start_early(argv: list[str], conf_dir: str) -> None:
    """Start the worker before Hydra is imported, when the command's backend (its `tracking=`
    choice among runner's own configs, else the default) runs in the background, so that it
    imports while this process imports Hydra and JAX. A choice from a user's config folder starts
    it on first use. Reads the two YAML files with PyYAML (Hydra and OmegaConf: ~0.1 s later)."""
    import yaml

    try:
        choice = next((a.split("=", 1)[1] for a in argv if a.startswith("tracking=")), None)
        conf = Path(conf_dir)
        if choice is None:
            defaults = yaml.safe_load((conf / "config.yaml").read_text()).get("defaults") or []
            choice = next((d["tracking"] for d in defaults if isinstance(d, dict) and "tracking" in d), None)
        path = conf / "tracking" / f"{choice}.yaml"
        if choice is None or not path.is_file():
            return
        settings = yaml.safe_load(path.read_text())
        target = settings.pop("_target_")
        background = getattr(locate(target), "background", False)
    except Exception:  # composing will say what is wrong
        return
    for arg in argv:  # the command line's tracking.<key>=<value> (the URI: which store to import)
        key, _, value = arg.lstrip("+").partition("=")
        if key.startswith("tracking.") and "." not in key[len("tracking."):]:
            settings[key[len("tracking."):]] = value
    if background:
        client(warm=(target, settings))


def locate(target: str):
    """The class a backend's `_target_` names (a dotted path: its module imported, then its
    attributes), as hydra.utils.get_class finds it: in this worker the target is one the command's
    Hydra instantiated already, and importing Hydra here (~0.1 s) would delay MLflow's import."""
    import importlib

    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:i])
        try:
            found = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name is None or not (module == e.name or module.startswith(e.name + ".")):
                raise  # a module that exists failed on one of its own imports
            continue
        for name in parts[i:]:
            found = getattr(found, name)
        return found
    raise ImportError(f"cannot import {target!r}")


def _preimport(target: str, settings: dict) -> None:
    """The backend's modules, imported with the garbage collector off (imports make objects that
    live as long as the process: collecting while they pile up costs ~0.1 s), then frozen out of
    later collections (each of which would go through them again while runs are logged)."""
    import gc

    gc.disable()
    try:
        locate(target).preimport(settings)
    except BaseException:
        pass  # the request that needs the module reports the error
    finally:
        gc.freeze()
        gc.enable()


def _backend(call: Call, backends: dict) -> Tracking:
    """The command's backend in this worker; a new worker taking over from one that died
    continues from the state the command kept."""
    backend = backends.get(call.handle)
    if backend is None:
        backend = backends[call.handle] = locate(call.target)(**call.settings)
        if call.state:
            backend.restore(call.state)
    return backend


def serve(req_fd: int, rep_fd: int, owner: int) -> None:
    """The worker's loop: one request at a time, in order, until the command's pipe closes.
    Request 0 (the first, if the command knew its backend early) starts the backend's imports in
    a thread, unanswered."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from runner.redact import RedactingStream, mask_log_records

    sys.stdout, sys.stderr = RedactingStream(sys.stdout), RedactingStream(sys.stderr)  # stores print URLs
    mask_log_records()
    os.environ[OWNER_ENV] = str(owner)  # runs are tagged with the command's pid (stale-run reaping)
    inbox = Connection(req_fd, writable=False)
    out = Connection(rep_fd, readable=False)
    backends: dict = {}
    while True:
        try:
            req, cwd, call = pickle.loads(inbox.recv_bytes())
        except (EOFError, OSError):
            os._exit(0)  # the command is done (or gone); an unfinished import is of no use
        if req == 0:
            threading.Thread(target=_preimport, args=(call.target, call.settings), name="tracking-import",
                             daemon=True).start()
            continue
        state = call.state
        try:
            if cwd != os.getcwd():
                os.chdir(cwd)
            backend = _backend(call, backends)
            value, ok = getattr(backend, call.method)(*call.args, **call.kwargs), True
            state = backend.state()
        except BaseException as e:
            value, ok = e, False
            state = backends[call.handle].state() if call.handle in backends else state
        try:
            out.send_bytes(_reply(req, ok, value, state))
        except OSError:
            pass  # the command is gone; finish the remaining requests anyway


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
