"""The progress line of a long fit: step, the best restart's loss, steps/s, time left.

The fit reports between chunks of compiled steps (runner/inference/svi/loop.py), so the numbers
come from the running program itself. On a terminal the line is rewritten in place a few times a
second; into a file or a pipe (CI, logs) a line is written at most every `every_s_pipe` seconds.
Fits shorter than `quiet_s` print nothing. `progress=false` turns it off (and runs all steps in
one call).
"""
from __future__ import annotations

import sys
import time


class Progress:
    chunk_s = 0.25  # seconds of compiled steps between two reports

    def __init__(self, total: int, label: str = "", stream=None, every_s: float | None = None,
                 quiet_s: float = 1.0, every_s_pipe: float = 10.0):
        self.total, self.label = total, label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every_s = every_s if every_s is not None else (0.25 if self.tty else every_s_pipe)
        self.quiet_s = quiet_s
        self.updates = 0  # reports received (chunks run)
        self.printed = 0  # lines (or rewrites) shown
        self._t0 = None  # set after the first chunk, which includes the compile
        self._step0 = 0
        self._last = -float("inf")

    def line(self, step: int, loss: float, rate: float) -> str:
        left = (self.total - step) / rate if rate > 0 else float("nan")
        eta = f"{left:.0f}s" if left == left else "?"
        return (f"runner: {self.label}step {step}/{self.total}  last loss {loss:.6g}  "
                f"{rate:,.0f} steps/s  left {eta}")

    def update(self, step: int, loss: float) -> None:
        """After each chunk: the line shows the mean rate since the end of the first chunk (which
        includes the compile)."""
        self.updates += 1
        now = time.perf_counter()
        if self._t0 is None:
            self._t0, self._step0 = now, step
            return
        rate = (step - self._step0) / max(now - self._t0, 1e-9)
        done = step >= self.total
        if now - self._t0 < self.quiet_s or (now - self._last < self.every_s and not (done and self.printed)):
            return
        self._last = now
        self.printed += 1
        text = self.line(step, loss, rate)
        if self.tty:
            self.stream.write("\r" + text + "\033[K")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.printed:
            self.stream.write("\n")
            self.stream.flush()
