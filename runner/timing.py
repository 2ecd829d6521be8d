"""Where a command's seconds go, phase by phase (`timing=true`: one line on stderr as it exits).

The phases, in the order a run meets them: `startup` (the interpreter and runner's, Hydra's and the
tracking worker's imports, to Hydra's entry), `compose` (Hydra: the config and the run directory),
`build` (the experiment: JAX, NumPyro, the model, the data, the checks), `compile` (XLA, or its
persistent cache), `fit` (the compiled program running), `outputs` (the run directory: arrays,
figures, the ArviZ file), `logging` (handing the record to the store and the store's answer),
`exit` (the summary, waiting for the tracking worker, the process's exit handlers). A phase nested in
another (compile within the fit) is counted once, in itself. Several jobs in one process
(a basic launcher's sweep) add up, and the line says how many.

Nothing here imports anything: a phase costs two perf_counter calls.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time

ORDER = ("startup", "compose", "build", "compile", "fit", "outputs", "logging", "exit")

_spent: dict[str, float] = {}
_stack: list[list] = []  # [name, start, time spent in phases nested inside]
_marks: dict[str, tuple[float, float]] = {}  # name -> (when, the phases' total then)
_counted = 0.0  # the seconds of every outermost phase so far
_jobs = 0
ON = False  # set by the Hydra task from the config's `timing`


def process_start() -> float:
    """perf_counter's reading when this process started (Linux: /proc; elsewhere the first import
    of this module), so `startup` includes the interpreter's own start and its imports."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        age = uptime - ticks / os.sysconf("SC_CLK_TCK")
        return time.perf_counter() - max(age, 0.0)
    except (OSError, ValueError, IndexError):
        return time.perf_counter()


_START = process_start()


@contextlib.contextmanager
def phase(name: str):
    """Count the time inside as `name` (less the phases nested inside it)."""
    entry = [name, time.perf_counter(), 0.0]
    _stack.append(entry)
    try:
        yield
    finally:
        _stack.pop()
        took = time.perf_counter() - entry[1]
        _spent[name] = _spent.get(name, 0.0) + took - entry[2]
        if _stack:
            _stack[-1][2] += took
        else:
            global _counted
            _counted += took


def mark(name: str) -> None:
    """A point in time that a later phase starts from (`since`)."""
    _marks[name] = (time.perf_counter(), _counted)


def since(mark_name: str, name: str) -> None:
    """Count the time from `mark_name` (the process's start for 'start') to now as `name`, less
    the phases counted in between (a fused sweep's launcher builds and fits its jobs before the
    first job starts: that is build and fit, not compose)."""
    start = (_START, 0.0) if mark_name == "start" else _marks.pop(mark_name, None)
    if start is not None and not _stack:
        _spent[name] = _spent.get(name, 0.0) + time.perf_counter() - start[0] - (_counted - start[1])


def job_started() -> None:
    global _jobs
    _jobs += 1


def line(total: float | None = None) -> str:
    """`runner: timing: startup 1.52 s, compose 0.21 s, ..., total 4.87 s` (phases never met left out)."""
    total = time.perf_counter() - _START if total is None else total
    parts = [f"{name} {_spent[name]:.2f} s" for name in ORDER if name in _spent]
    parts += [f"{name} {value:.2f} s" for name, value in _spent.items() if name not in ORDER]
    jobs = f" ({_jobs} jobs)" if _jobs > 1 else ""
    return f"runner: timing{jobs}: " + ", ".join(parts + [f"total {total:.2f} s"])


def report() -> None:
    """The line on stderr, when `timing=true` asked for it."""
    if ON:
        print(line(), file=sys.stderr, flush=True)


def spent() -> dict[str, float]:
    """The seconds counted so far by phase (a benchmark reads them in-process)."""
    return dict(_spent)


def reset() -> None:
    """Forget what was counted (an in-process caller timing one run after another)."""
    global _jobs, _counted
    _spent.clear()
    _marks.clear()
    _jobs, _counted = 0, 0.0
