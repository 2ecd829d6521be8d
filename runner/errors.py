"""Errors a user can cause. The CLI prints them as one line and exits 2."""
import errno


class ConfigError(Exception):
    """A configuration or input problem found before (or instead of) a fit."""


class TrackingError(Exception):
    """The tracking store cannot be reached or written (one line, names the URI)."""


#: errno of a write that failed for want of room (or a read-only mount): the run's failure, said in
#: one line (runner.app), never a figure skipped or a traceback
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in DISK_ERRORS


def describe(e: BaseException) -> str:
    """An exception as one line that keeps its cause: the type, the message's first non-empty
    line (an empty message is fine), and for an error raised inside a user's file, where."""
    import traceback

    import re

    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    # a database driver's error wrapped by SQLAlchemy (and MLflow): the driver's line says what happened
    driver = next((m.group(1) for ln in lines if (m := re.match(r"\((?:sqlite3|psycopg2?|pymysql|MySQLdb)\.[\w.]+\) (.+)", ln))), None)
    text = f"{type(e).__name__}: {driver or lines[0]}" if lines else type(e).__name__
    frames = traceback.extract_tb(e.__traceback__) if e.__traceback__ else []
    user = [f for f in frames if "site-packages" not in f.filename and "/runner/" not in f.filename
            and "/hydra_plugins/" not in f.filename
            and not f.filename.startswith("<")]
    if user:
        text += f" (at {user[-1].filename}:{user[-1].lineno})"
    return text


class RunFailed(Exception):
    """A run that started and did not end well: every restart diverged (code 1), or its record
    could not be written (code 2 for an unreachable store, 1 otherwise). The run directory keeps
    what was fitted; the message says where."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


class Pruned(Exception):
    """A search's pruner stopped this trial's fit at `step` (runner/search.py): the run ends
    KILLED with the tag `pruned`, the trial PRUNED."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"pruned at step {step} (best loss {loss:.6g})")
        self.step, self.loss = step, loss
