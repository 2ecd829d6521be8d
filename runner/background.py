"""Imports started in a background thread while the command waits on another process (a sweep's
store opening in the tracking worker: runner.sweep), and the wait for them: a module must never be
imported by two threads at once (matplotlib.pyplot, half imported by another thread, once had no
`switch_backend` for the figures: every figure skipped). Code that imports what a background
import may be importing calls `settled()` first. And the environment of the command's own helper
processes (`child_env`: the tracking worker, the figures' helper)."""
from __future__ import annotations

import collections
import os
import threading
from pathlib import Path

_THREADS: list[threading.Thread] = []
PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the folder runner is imported from


def child_env() -> dict:
    """The environment of a helper process of the command (`python -m runner...` or `-c`): runner
    importable as in this process (a checkout on PYTHONPATH, an editable install), and
    site-packages never put ahead of the standard library (an installed runner needs nothing)."""
    extra = None if PACKAGE_ROOT.name in ("site-packages", "dist-packages") else str(PACKAGE_ROOT)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (extra, os.environ.get("PYTHONPATH")) if p)}
WAIT_S = 120.0  # an import that takes longer is not waited for (the caller's own import then says why)


def start(name: str, load) -> None:
    thread = threading.Thread(target=load, name=name, daemon=True)
    _THREADS.append(thread)
    thread.start()


def settled() -> None:
    """Wait for the background imports (at once when there are none or they are done); in a
    background thread itself, for none."""
    me = threading.current_thread()
    if me in _THREADS:
        return
    for thread in list(_THREADS):
        thread.join(WAIT_S)
        if not thread.is_alive():
            _THREADS.remove(thread)


# --- work done while this process waits on another -------------------------------------------------
_IDLE: collections.deque = collections.deque()


def when_idle(task) -> None:
    """`task()` runs in the main thread the next time it waits on the tracking worker process
    (runner.tracking.worker.Client.result): a fused sweep writes its next job's files while the
    worker logs this job's run, each on its own core. A task catches its own errors."""
    _IDLE.append(task)


def idle_waiting() -> bool:
    return bool(_IDLE) and threading.current_thread() is threading.main_thread()


def run_idle() -> None:
    """The oldest waiting task, run here (the main thread only: numpyro's handlers are global)."""
    if idle_waiting():
        _IDLE.popleft()()


def drop_idle() -> None:
    _IDLE.clear()
