"""runner/lifecycle.py: one scope for a run's life. A signal inside a run is recorded and raised
only at a safe point (never from inside whatever code it lands in); outside a run it stops the
command at once; while the results are logged it waits for them. The scope ends the run
KILLED (an interruption), FAILED (an error, a full disk in one line) or, through `complete`,
FINISHED, and writes the job's status where a sweep counts it. Real signals, sent to this
process; a backend that records the events it gets."""
import errno
import json
import os
import signal

import pytest

from runner.errors import RunFailed, TrackingError
from runner.job import Job, SweepJob
from runner.lifecycle import Interrupted, RunScope, Signals, TimedOut
from runner.tracking.base import RunEnd, RunRecord, RunStart, Tracking


class Events(Tracking):
    """Every event it gets, in order; `fail` makes run_completed raise it."""

    def __init__(self, fail=None):
        self.events, self.fail = [], fail

    def run_started(self, start):
        self.events.append(("started", start.name))

    def run_completed(self, record):
        if self.fail:
            raise self.fail
        self.events.append(("completed", record.status))
        return "r1"

    def child_logged(self, record):
        self.events.append(("child", record.parent_id))

    def run_failed(self, end):
        self.events.append(("failed", end.error))
        return "r1"

    def run_killed(self, end):
        self.events.append(("killed", end.error))
        return "r1"


@pytest.fixture
def signals(monkeypatch):
    """A fresh Signals installed in this process (the CLI's), Python's own handlers restored after."""
    import runner.lifecycle as lifecycle

    fresh = Signals()
    monkeypatch.setattr(lifecycle, "SIGNALS", fresh)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    fresh.install()
    yield fresh
    signal.signal(signal.SIGINT, before[0])
    signal.signal(signal.SIGTERM, before[1])


def record(status="FINISHED", tags=None):
    return RunRecord(name="r", tags=tags or {"config_hash": "h", "seed": 3}, params={}, scalars={"final_loss": 1.5},
                     curves={}, artifact_dir=None, artifacts=[], status=status)


def test_a_signal_inside_a_run_is_recorded_and_raised_at_the_next_safe_point(signals, tmp_path):
    backend = Events()
    with pytest.raises(Interrupted) as e:
        with RunScope(backend, Job(tmp_path, {}), RunEnd()) as scope:
            scope.open(RunStart(name="r", tags={}, config_hash="h"))
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here: it only records
            reached = True  # the code the signal landed in goes on
            scope.safe_point()
    assert reached and e.value.code == 143 and signals.code == 143
    assert backend.events == [("started", "r"), ("killed", "interrupted")]


def test_outside_a_run_a_signal_stops_the_command_at_once(signals):
    with pytest.raises(Interrupted) as e:
        os.kill(os.getpid(), signal.SIGINT)
    assert e.value.code == 130 and signals.exit_code(e.value) == 130


def test_a_signal_while_the_results_are_logged_waits_for_them(signals, tmp_path, capsys):
    class Slow(Events):
        def run_completed(self, record):
            os.kill(os.getpid(), signal.SIGINT)  # lands while the record is being logged
            self.events.append(("completed", record.status))
            return "r1"

    backend = Slow()
    job = SweepJob(tmp_path, {}, number=0)
    with pytest.raises(Interrupted) as e:
        with RunScope(backend, job, RunEnd()) as scope:
            scope.complete(record())
    assert e.value.code == 130 and signals.said
    assert backend.events == [("completed", "FINISHED")]  # complete, never KILLED on top
    assert capsys.readouterr().err == "runner: interrupted while the results were logged: run r1 is complete and FINISHED\n"
    assert json.loads((tmp_path / "runner_status.json").read_text())["status"] == "run"


def test_an_error_ends_the_run_failed_with_its_message(tmp_path):
    backend = Events()
    with pytest.raises(ValueError):
        with RunScope(backend, SweepJob(tmp_path, {}, number=0), RunEnd()):
            raise ValueError("no good")
    assert backend.events == [("failed", "ValueError: no good")]
    assert not (tmp_path / "runner_status.json").exists()  # the job writes an error's status (runner.job)


def test_an_interrupted_sweep_job_says_so_in_its_status(signals, tmp_path):
    backend = Events()
    with pytest.raises(Interrupted):
        with RunScope(backend, SweepJob(tmp_path, {}, number=0), RunEnd()) as scope:
            os.kill(os.getpid(), signal.SIGINT)
            scope.safe_point()
    assert backend.events == [("killed", "interrupted")]
    assert json.loads((tmp_path / "runner_status.json").read_text()) == {"status": "failed", "error": "interrupted"}


def test_a_signal_after_the_last_safe_point_stops_the_command_when_the_run_ends(signals, tmp_path):
    """A sweep's job that yields to a twin (or a run whose record is complete): the signal that
    came meanwhile is not lost."""
    with pytest.raises(Interrupted):
        with RunScope(Events(), Job(tmp_path, {}), RunEnd()) as scope:
            os.kill(os.getpid(), signal.SIGINT)
            scope.done = True  # nothing left to end


def test_a_full_disk_is_one_line_and_the_run_failed(tmp_path):
    backend = Events()
    with pytest.raises(RunFailed, match=r"^cannot write /x/metrics.json: No space left on device; run r1 is FAILED$"):
        with RunScope(backend, Job(tmp_path, {}), RunEnd()):
            raise OSError(errno.ENOSPC, "No space left on device", "/x/metrics.json")
    assert backend.events[0][0] == "failed"


def test_complete_records_the_run_and_its_children_once(tmp_path):
    backend = Events()
    child = record()
    with RunScope(backend, SweepJob(tmp_path, {}, number=0), RunEnd()) as scope:
        assert scope.complete(record(tags={"config_hash": "h", "seed": 3, "config_group": "g", "objective": "elbo"}), [child]) == "r1"
    assert backend.events == [("completed", "FINISHED"), ("child", "r1")]
    assert json.loads((tmp_path / "runner_status.json").read_text()) == {
        "status": "run", "run_id": "r1", "config_group": "g", "final_loss": 1.5, "config_hash": "h", "seed": 3,
        "objective": "elbo"}


def test_a_record_the_store_refuses_is_a_run_failed_that_keeps_the_fit(tmp_path):
    backend = Events(fail=TrackingError("the store is gone"))
    with pytest.raises(RunFailed, match=f"^the store is gone; the fit is saved in {tmp_path}$") as e:
        with RunScope(backend, Job(tmp_path, {}), RunEnd()) as scope:
            scope.complete(record())
    assert e.value.code == 2 and backend.events == []  # not ended twice: the backend ended it


class Open(Events):
    """A backend whose run is open once started (its id known: MLflow's, in the tracking worker);
    `refuse`: flush (the wait for the run's opening) raises it."""

    def __init__(self, refuse=None):
        super().__init__()
        self.refuse = refuse

    def run_started(self, start):
        super().run_started(start)
        self.run_id = "r1"

    def flush(self):
        if self.refuse:
            raise self.refuse


def test_children_of_an_open_run_are_logged_before_its_record_and_once(tmp_path):
    """SVI's replicates: logged while the run's own files are written (the tracking worker's core),
    under the open run, and not again by complete."""
    backend = Open()
    with RunScope(backend, Job(tmp_path, {}), RunEnd()) as scope:
        scope.open(RunStart(name="run", tags={}, config_hash="h"))
        children = [record(), record()]
        scope.log_children(children)
        assert backend.events == [("started", "run"), ("child", "r1"), ("child", "r1")] and scope.children_sent
        assert scope.complete(record(), [] if scope.children_sent else children) == "r1"
    assert backend.events[-1] == ("completed", "FINISHED")
    # a run not open (no store, or one that opens its run with its record): complete logs them
    backend = Events()
    with RunScope(backend, Job(tmp_path, {}), RunEnd()) as scope:
        children = [record()]
        scope.log_children(children)
        assert not scope.children_sent and backend.events == []
        scope.complete(record(), children)
    assert backend.events == [("completed", "FINISHED"), ("child", "r1")]


def test_a_store_error_found_by_log_children_fails_the_run_at_complete(tmp_path):
    """The run's files are written after log_children: its error waits for complete, which fails the
    run as a refused record does (one line, code 2, the fit kept)."""
    backend = Open(refuse=TrackingError("the store is gone"))
    with pytest.raises(RunFailed, match=f"^the store is gone; the fit is saved in {tmp_path}$") as e:
        with RunScope(backend, Job(tmp_path, {}), RunEnd()) as scope:
            scope.open(RunStart(name="run", tags={}, config_hash="h"))
            scope.log_children([record()])  # no error here: the files are still to be written
            assert not scope.children_sent
            scope.complete(record(), [record()])
    assert e.value.code == 2 and backend.events == [("started", "run")]


class ChildRefused(Open):
    """Its children's logging fails, found at the next flush and said once; its next call flushes
    first (as the tracking worker's Background does)."""

    def child_logged(self, record):
        super().child_logged(record)
        self.refuse = TrackingError("the store refused a child")

    def flush(self):
        error, self.refuse = self.refuse, None
        if error:
            raise error

    def run_completed(self, record):
        self.flush()
        return super().run_completed(record)


def test_a_child_the_store_refuses_after_it_was_sent_still_records_the_run_first(tmp_path):
    """Children sent ahead of the run's record whose logging fails: the run's own record is logged
    (FINISHED, not left RUNNING), then the run fails as a refused record does."""
    backend = ChildRefused()
    with pytest.raises(RunFailed, match="^the store refused a child; the fit is saved in") as e:
        with RunScope(backend, Job(tmp_path, {}), RunEnd()) as scope:
            scope.open(RunStart(name="run", tags={}, config_hash="h"))
            scope.log_children([record()])
            assert scope.children_sent
            scope.complete(record(), [])
    assert e.value.code == 2
    assert backend.events == [("started", "run"), ("child", "r1"), ("completed", "FINISHED")]


class Later(Events):
    """A backend that logs a record later (as the tracking worker does for a fused job)."""

    def run_completed_later(self, record, failed):
        self.events.append(("later", record.status))
        self.failed = failed
        return "r1"


def test_a_fused_jobs_record_logged_later_fails_its_job_when_the_store_refuses_it(tmp_path, capsys):
    """RunScope.complete(later=True): a sweep's job hands its record over and says it ran; the
    store's refusal, found later, fails that job as a refusal found at once would (its status
    file and one line). A search's trial (the sweeper takes its value) and a single run wait."""
    backend = Later()
    with RunScope(backend, SweepJob(tmp_path, {}, number=0), RunEnd()) as scope:
        assert scope.complete(record(), later=True) == "r1"
    assert backend.events == [("later", "FINISHED")]
    assert json.loads((tmp_path / "runner_status.json").read_text())["status"] == "run"
    backend.failed(TrackingError("the store is gone"))
    status = json.loads((tmp_path / "runner_status.json").read_text())
    assert status == {"status": "failed", "error": f"the store is gone; the fit is saved in {tmp_path}"}
    assert capsys.readouterr().err == f"runner: error: the store is gone; the fit is saved in {tmp_path}\n"
    backend.failed(ValueError("bad value"))
    assert json.loads((tmp_path / "runner_status.json").read_text())["error"] == (
        f"tracking failed (ValueError: bad value); the fit is saved in {tmp_path}")
    for job in (SweepJob(tmp_path, {}, number=0, trial={"number": 0, "study_name": "s"}), Job(tmp_path, {})):
        backend.events = []
        with RunScope(backend, job, RunEnd()) as scope:
            scope.complete(record(), later=True)
        assert backend.events == [("completed", "FINISHED")]


def test_what_registered_for_a_stop_ends_once(signals):
    """runner.sweep registers its parent run: a command stopped by a signal ends it KILLED."""
    ended = []
    signals.at_stop["broken"] = lambda error: 1 / 0  # one that fails does not keep the others from ending
    signals.at_stop["sweep"] = lambda error: ended.append("P")
    signals.stopped()
    signals.stopped()  # once
    assert ended == ["P"] and signals.at_stop == {}


def test_a_second_signal_in_a_run_stops_it_at_once(signals, tmp_path):
    """A fit without safe points inside (NUTS, EM) runs to its end on one Ctrl-C; a second one
    stops it there and then, and the run still ends KILLED."""
    backend = Events()
    with pytest.raises(Interrupted):
        with RunScope(backend, Job(tmp_path, {}), RunEnd()):
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            raise AssertionError("not reached: the second signal raises")
    assert backend.events == [("killed", "interrupted")]


def test_a_second_signal_while_the_run_is_opened_waits_for_it(signals, tmp_path):
    """Issue 28: a raise inside the store's call that opens the run would leave a run that no one
    ends (RUNNING). Both signals wait; the run, opened, stops at its next safe point, KILLED."""
    class Opening(Events):
        def run_started(self, start):
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # "now": it waits until the run is opened
            self.events.append(("started", start.name))

    backend = Opening()
    with pytest.raises(Interrupted) as e:
        with RunScope(backend, Job(tmp_path, {}), RunEnd()) as scope:
            scope.open(RunStart(name="r", tags={}, config_hash="h"))
            scope.safe_point()
    assert e.value.code == 130 and not signals.deferred
    assert backend.events == [("started", "r"), ("killed", "interrupted")]


def test_a_second_signal_while_the_run_is_ended_waits_for_its_end_to_be_recorded(signals, tmp_path):
    class Ending(Events):
        def run_killed(self, end):
            os.kill(os.getpid(), signal.SIGTERM)  # lands while KILLED is being recorded
            self.events.append(("killed", end.error))
            return "r1"

    backend = Ending()
    with pytest.raises(Interrupted) as e:
        with RunScope(backend, Job(tmp_path, {}), RunEnd()) as scope:
            os.kill(os.getpid(), signal.SIGINT)
            scope.safe_point()
    assert e.value.code == 130 and backend.events == [("killed", "interrupted")] and signals.runs == 0


def test_a_second_signal_swallowed_by_a_callback_still_stops_the_run_at_its_safe_point(signals, tmp_path):
    """The raise of a second signal can land in a callback that ignores exceptions (XLA's gc
    callback printed `Exception ignored in ...` and the fit ran on): the signal stays recorded, the
    run stops at its next safe point and ends KILLED, never RUNNING."""
    def callback():  # as CPython treats an exception raised in a gc callback
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except BaseException:
            pass

    backend = Events()
    with pytest.raises(Interrupted):
        with RunScope(backend, Job(tmp_path, {}), RunEnd()) as scope:
            scope.open(RunStart(name="r", tags={}, config_hash="h"))
            os.kill(os.getpid(), signal.SIGINT)  # the first: recorded
            callback()  # the second, swallowed
            scope.safe_point()
    assert backend.events == [("started", "r"), ("killed", "interrupted")]


def test_nested_waits_end_with_the_outer_one(signals):
    with signals.logging():
        with signals.logging():
            pass
        assert signals.deferred
    assert not signals.deferred


@pytest.fixture
def usr2(signals):
    """SIGUSR2 (SLURM's signal before a job's time limit) routed to SIGNALS.time_out, as
    hydra/launcher=slurm does in its jobs."""
    before = signal.getsignal(signal.SIGUSR2)
    signal.signal(signal.SIGUSR2, signals.time_out)
    yield signals
    signal.signal(signal.SIGUSR2, before)


def test_a_time_out_stops_the_fit_at_its_next_safe_point_and_the_job_waits_requeued(usr2, tmp_path):
    backend = Events()
    with pytest.raises(TimedOut) as e:
        with RunScope(backend, SweepJob(tmp_path, {}, number=0), RunEnd()) as scope:
            os.kill(os.getpid(), signal.SIGUSR2)  # only recorded: nothing raised where it lands
            reached = True
            scope.safe_point()
    assert reached and e.value.code == 124 and usr2.code is None  # not a Ctrl-C: the command is not stopping
    said = "timed out: the job is requeued and continues this run from its checkpoint"
    assert backend.events == [("killed", said)]
    assert json.loads((tmp_path / "runner_status.json").read_text()) == {"status": "requeued", "error": said}


def test_a_time_out_after_the_runs_last_safe_point_leaves_it_complete(usr2, tmp_path):
    """The run completes (FINISHED) and the job ends normally: nothing to requeue."""
    backend = Events()
    with RunScope(backend, SweepJob(tmp_path, {}, number=0), RunEnd()) as scope:
        os.kill(os.getpid(), signal.SIGUSR2)
        assert scope.complete(record()) == "r1"
    assert backend.events == [("completed", "FINISHED")]
    assert json.loads((tmp_path / "runner_status.json").read_text())["status"] == "run"


def test_the_cli_collects_no_garbage_until_its_experiment_is_built_and_a_users_choice_stays():
    """pause_gc (the CLI's first step) turns the collector off; resume_gc (after the build, or at a
    job's end) freezes what exists and turns it on again, once. A program that had turned the
    collector off itself keeps it off: neither touches it."""
    import gc

    from runner.lifecycle import pause_gc, resume_gc

    assert gc.isenabled()
    before = gc.get_freeze_count()
    try:
        pause_gc()
        assert not gc.isenabled()
        resume_gc()
        assert gc.isenabled() and gc.get_freeze_count() > before
        resume_gc()  # once only
        gc.disable()  # the program's own choice
        pause_gc()
        resume_gc()
        assert not gc.isenabled()
    finally:
        gc.unfreeze()
        gc.enable()
