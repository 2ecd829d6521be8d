"""A run's life in one scope (the shape of Sacred's `Run.__call__`): opened, then FINISHED (its
record complete), FAILED (an error) or KILLED (Ctrl-C, SIGTERM), and the job's status file
(runner_status.json, where a sweep counts it: run or failed).

Signals: the CLI installs `SIGNALS` (runner.__main__). Inside a run a SIGINT or SIGTERM is only
recorded: the handler never raises inside whatever code it lands in (a GC callback once swallowed
a SystemExit raised there, and the fit ran on). The run stops at its next safe point (between the
fit's compiled chunks, between the run's phases) with `Interrupted`, and ends KILLED. While a
run is opened in the store, its results are logged (about a second), or its end recorded, a
signal (a second one too) waits for that: the run ends complete and FINISHED, or KILLED, then the
command stops and says so. Outside a run (composing, a launcher waiting for its jobs) a signal
stops the command at once, and so does a second signal in a run (a fit without safe points
inside, NUTS or EM, runs to its end otherwise): how a user says "now". Where that raise lands in
a callback that swallows it (XLA's gc callback), the signal is recorded all the same and the
run stops at its next safe point, or when it ends: it is never left RUNNING by a live command.
A fused sweep's job hands its record to the tracking worker and goes on to the next job
(`RunScope.complete(later=True)`); a signal meanwhile waits for that record where the command
next waits on the worker (runner.tracking.worker.settle), or at the job's own end.
"""
from __future__ import annotations

import signal
import sys
from contextlib import contextmanager

from runner.errors import Pruned, RunFailed, TrackingError, describe, disk_full
from runner.redact import redact

_GC_PAUSED = False


def pause_gc() -> None:
    """The CLI's first step: no garbage collection while the command imports (Hydra, JAX, NumPyro)
    and builds its experiment. Those objects live as long as the process; collecting while they
    pile up went through them ~450 times (~0.1 s of a 1.5 s command)."""
    import gc

    global _GC_PAUSED
    if gc.isenabled():
        gc.disable()
        _GC_PAUSED = True


def resume_gc() -> None:
    """Once the experiment is built (or its job ended): what exists now frozen out of later
    collections (they would go through it again at every full collection), collection on again.
    Only undoes pause_gc: a program that turned the collector off itself keeps it off."""
    import gc

    global _GC_PAUSED
    if _GC_PAUSED:
        _GC_PAUSED = False
        gc.freeze()
        gc.enable()


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (code 130) or SIGTERM (143), raised at a safe point."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


class TimedOut(Interrupted):
    """The job's time limit is near (the signal SLURM sends before it, hydra/launcher=slurm):
    raised at the run's next safe point; the fit keeps its checkpoint and the launcher requeues the
    job, which continues the same run from it (runner.job.requeued_dir)."""

    def __init__(self, code: int = 124):  # 124: timeout(1)'s code; `code` so that a copy of it can be made
        super().__init__(code)


class Signals:
    """This process's SIGINT and SIGTERM (see the module docstring)."""

    def __init__(self):
        self.code: int | None = None  # 130 or 143 once a signal came
        self.runs = 0  # runs open in this process
        self.deferred = False  # results being logged: the signal waits for them
        self.said = False  # the interruption's message is printed already
        self.at_stop: dict = {}  # what ends if the command stops on a signal, by name (a sweep's parent: runner.sweep)
        self.timed_out = False  # the job's time limit is near (time_out): the run stops at its next safe point

    def install(self) -> None:
        self.__init__()  # a new command in this process starts with nothing recorded
        self.take_back()

    def take_back(self) -> None:
        """This process's Ctrl-C and SIGTERM are runner's again (Ray's driver installs its own
        SIGTERM handler, which exits at once and leaves the sweep's parent RUNNING)."""
        signal.signal(signal.SIGINT, self.handle)
        signal.signal(signal.SIGTERM, self.handle)

    def handle(self, signum, frame) -> None:
        again = self.code is not None
        self.code = 143 if signum == signal.SIGTERM else 130
        if not self.deferred and (not self.runs or again):  # outside a run, or asked twice: now
            raise Interrupted(self.code)

    def time_out(self, signum=None, frame=None) -> None:
        """The signal before a job's time limit: only recorded, never raised here or after the
        run's results (a run that completed stays complete and the job ends normally)."""
        self.timed_out = True

    def safe_point(self) -> None:
        if self.code and not self.deferred:
            raise Interrupted(self.code)
        if self.timed_out and not self.deferred:
            raise TimedOut()

    def exit_code(self, error: BaseException) -> int | None:
        """130 / 143 when `error` is (or came with) an interruption; None otherwise."""
        if self.code:
            return self.code
        if isinstance(error, Interrupted):
            return error.code
        return 130 if isinstance(error, KeyboardInterrupt) else None

    def stopped(self, error: str | None = None) -> None:
        """The command stops on a signal (or, with `error`, on a failure outside any run, e.g. a
        sweep's launcher): what registered for it ends (a sweep's parent run, and its jobs that
        were running, KILLED, or FAILED with the error; the jobs that finished stay). Each hook
        is called with `error`."""
        hooks, self.at_stop = self.at_stop, {}
        for hook in hooks.values():
            try:
                hook(error)
            except Exception:
                pass

    @contextmanager
    def logging(self):
        """The run's results being logged (or the run opened or ended in the store): a signal,
        a second one too, waits until they are. Nested blocks keep waiting until the outer ends."""
        before, self.deferred = self.deferred, True
        try:
            yield
        finally:
            self.deferred = before


SIGNALS = Signals()


class RunScope:
    """One run from the moment it is opened in the backend (`open`) to its end. Leaving the scope
    with an error ends the run KILLED (an interruption) or FAILED, with what there is (`end`:
    params, the error, the run directory's config.yaml and metrics.json); `complete` records it
    whole and FINISHED (or FAILED when the fit failed)."""

    def __init__(self, backend, job, end):
        self.backend, self.job, self.end = backend, job, end
        self.run_id: str | None = None
        self.done = False
        self.children_sent = False  # log_children sent them ahead of the run's record
        self.logging_error: Exception | None = None  # the store's, found by log_children: raised by complete

    def __enter__(self) -> "RunScope":
        SIGNALS.runs += 1
        return self

    def open(self, start) -> str | None:
        """Open the run; the id of a run it yields to (a sweep's twin), in which case the job is
        skipped and the scope has nothing to end."""
        with SIGNALS.logging():  # opened whole: a second signal here would leave a run no one ends
            twin = self.backend.run_started(start)
        if twin:
            self.done = True
        return twin

    def safe_point(self) -> None:
        SIGNALS.safe_point()

    def __exit__(self, kind, error, tb) -> bool:
        try:
            with SIGNALS.logging():  # a second signal while the run is ended waits: it ends KILLED, recorded
                if error is not None and not self.done:
                    self.ended(error)
        finally:
            SIGNALS.runs -= 1
        if error is None and SIGNALS.code and not SIGNALS.deferred:
            raise Interrupted(SIGNALS.code)  # it came after the run's last safe point: the command stops now
        if error is not None and not self.done and SIGNALS.exit_code(error) is None and disk_full(error):
            where = f"run {self.run_id} is FAILED" if self.run_id else "the run failed"  # one line, not a traceback
            raise RunFailed(f"cannot write {error.filename or self.job.run_dir}: {error.strerror}; {where}") from None
        if error is not None and not self.done and SIGNALS.exit_code(error) is None and isinstance(error, RunFailed):
            where = f"run {self.run_id} is FAILED" if self.run_id else f"the run in {self.job.run_dir} failed"
            raise RunFailed(f"{error}; {where}", error.code) from None  # a fit that could not start: one line
        return False

    def ended(self, error: BaseException) -> None:
        """The run ends KILLED (an interruption) or FAILED (with the error), recorded before
        anything else (a signal meanwhile waits); an interrupted sweep job says so in its
        status file (an error's status is the job's to write: runner.job)."""
        code = SIGNALS.exit_code(error)
        pruned = isinstance(error, Pruned)  # a search's pruner stopped it: KILLED, tagged, not an error
        if pruned:
            self.end.tags = {**self.end.tags, "pruned": f"at step {error.step} (best loss {error.loss:.6g})"}
        self.end.error = None if pruned else "interrupted" if code else redact(f"{type(error).__name__}: {error}")[:500]
        if isinstance(error, TimedOut):
            self.end.error = "timed out: the job is requeued and continues this run from its checkpoint"
        with SIGNALS.logging():
            try:
                self.run_id = (self.backend.run_killed if code or pruned else self.backend.run_failed)(self.end)
            except BaseException:  # never mask the original exception
                pass
        if code or pruned:
            try:
                if pruned:
                    self.job.said("pruned", run_id=self.run_id, step=error.step, loss=error.loss)
                else:
                    self.job.said("requeued" if isinstance(error, TimedOut) else "failed", error=self.end.error)
            except OSError:
                pass

    def logging_failed(self, error: Exception) -> RunFailed:
        """The run's record could not be logged: the job fails with one line (the fit is kept)."""
        if isinstance(error, TrackingError):
            return RunFailed(f"{error}; the fit is saved in {self.job.run_dir}", code=2)
        return RunFailed(f"tracking failed ({describe(error)}); the fit is saved in {self.job.run_dir}")

    def logging_failed_later(self, error: Exception) -> None:
        """A record sent without waiting (`complete(later=True)`) failed in the worker: the job
        is failed as `logging_failed` fails it here (its status file and its error line)."""
        failed = self.logging_failed(error)
        self.job.refused(redact(str(failed)), failed.code)

    def log_children(self, children) -> None:
        """The run's children (SVI's replicates), sent before its own record where the run is open
        (its id known): a background backend logs them while this process writes the run's
        figures and files; `complete` waits for them (flush). A run not open: `complete` logs them.
        An error of the store here is kept for `complete`: the run's files are written first."""
        if not children:
            return
        try:
            with SIGNALS.logging():
                self.backend.flush()  # the run's opening, sent without waiting (a background backend)
                run_id = self.backend.run_id
                if run_id is None:
                    return
                for child in children:
                    child.parent_id = run_id
                    self.backend.child_logged(child)
        except Exception as e:
            self.logging_error = e
        self.children_sent = self.logging_error is None

    def children_logged(self) -> Exception | None:
        """The error of the children `log_children` sent (None: logged, or none sent)."""
        if not self.children_sent:
            return None
        try:
            self.backend.flush()
        except Exception as e:
            return e
        return None

    def complete(self, record, children=(), later: bool = False) -> str | None:
        """The run's record and its children, logged while a signal waits; then, if one came,
        the command stops (the run is complete: it says so). `later` (a fused sweep's job, whose
        run was opened in the tracking worker): the record is sent and the command goes on to
        the next job while the worker logs it; its error, found at the command's next call to
        the worker (at the latest when the launcher settles), fails this job as it would here."""
        try:
            with SIGNALS.logging():
                if self.logging_error is not None:
                    raise self.logging_error
                children_error = self.children_logged()
                if later and not children and self.job.may_log_later:
                    self.run_id = self.backend.run_completed_later(record, self.logging_failed_later)
                else:
                    self.run_id = self.backend.run_completed(record)
                for child in children:
                    child.parent_id = self.run_id
                    self.backend.child_logged(child)
                self.backend.flush()  # the children: done, or their error raised here
                if children_error is not None:  # the run itself is recorded first, as when they came after it
                    raise children_error
        except Exception as e:
            self.done = True
            raise self.logging_failed(e) from None
        self.done = True
        if record.status == "FINISHED":
            tags = record.tags
            self.job.said("run", run_id=self.run_id, config_group=tags.get("config_group", "(defaults)"),
                          final_loss=record.scalars.get("final_loss"), config_hash=tags.get("config_hash"),
                          seed=tags.get("seed"), objective=tags.get("objective"),
                          **({"calibration": tags["sbc_verdict"]} if tags.get("sbc_verdict") else {}))
        if SIGNALS.code:  # it came while the results were logged: the run is complete, say so
            if later:  # (its record is in once the worker has logged it)
                self.backend.settle()
            SIGNALS.said = True
            print(f"runner: interrupted{' (SIGTERM)' if SIGNALS.code == 143 else ''} while the results were logged: "
                  f"run {self.run_id} is complete and {record.status}", file=sys.stderr)
            raise Interrupted(SIGNALS.code)
        return self.run_id
