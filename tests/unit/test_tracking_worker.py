"""runner/tracking/worker.py, in-process: what the tracking worker sends back to the command always
loads there. (The worker as a process: tests/e2e/test_store.py.)"""
import pytest


class TwoArgError(Exception):
    def __init__(self, what, where):
        super().__init__(f"{what} at {where}")


def test_every_worker_reply_loads_in_the_command():
    """An answer the command could not unpickle would stop its receiver and hang the command:
    such an exception comes back as a RuntimeError naming it; a plain one comes back as itself."""
    import pickle

    from runner.tracking import TrackingError
    from runner.tracking.worker import _reply

    state = {"run_id": "r", "experiment_id": "1", "reaped": []}
    req, ok, err, back = pickle.loads(_reply(7, False, TwoArgError("bad", "store"), state))
    assert (req, ok, back) == (7, False, state)
    assert type(err) is RuntimeError and str(err) == "TwoArgError: bad at store"
    _, ok, err, _ = pickle.loads(_reply(8, False, TrackingError("one line"), state))
    assert not ok and type(err) is TrackingError and str(err) == "one line"
    assert pickle.loads(_reply(9, True, ("run", True), state)) == (9, True, ("run", True), state)
    _, ok, err, _ = pickle.loads(_reply(10, True, [TwoArgError("odd", "value")], state))  # a value too
    assert not ok and type(err) is RuntimeError and str(err).startswith("TypeError: ")


ELSEWHERE = """
import os

from runner.tracking.base import Tracking


class Elsewhere(Tracking):
    background = True  # its events run in the tracking worker process

    def __init__(self, **settings):
        self.settings = settings

    def finished_run(self, config_hash):
        return f"{os.getpid()} {config_hash} {sorted(self.settings.items())}"

    @staticmethod
    def preimport(settings):
        import gc
        import json
        import sys
        import time

        collecting = gc.isenabled()
        time.sleep(0.3)  # a slow import
        with open(settings["log"], "w") as f:
            json.dump({"settings": settings, "collecting": collecting, "argv": sys.argv}, f)

    def warmed(self):
        import gc

        return gc.isenabled(), gc.get_freeze_count()

    def final_loss_of(self, run_id):
        import time

        time.sleep(1.0)  # a slow store
        return 1.5

    def run_started(self, start):
        self.run_id = start.name
        return None

    def run_completed(self, record):
        import time

        time.sleep(0.6)  # a slow store
        if record.status == "BROKEN":
            raise ValueError(f"cannot log {record.name}")
        with open(self.settings["log"], "a") as f:
            f.write(record.name + "\\n")
        run_id, self.run_id = self.run_id, None
        return run_id
"""


def elsewhere(tmp_path, monkeypatch, **settings):
    """The Elsewhere backend from a module in `tmp_path`, with a tracking worker of its own that
    finds the module: (backend, worker); the caller closes the worker."""
    import os

    from omegaconf import OmegaConf

    from runner.tracking import from_config
    from runner.tracking.worker import Client

    (tmp_path / "elsewhere_backend.py").write_text(ELSEWHERE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    backend = from_config(OmegaConf.create({"_target_": "elsewhere_backend.Elsewhere", **settings}))
    backend._worker = worker = Client()
    return backend, worker


def test_any_background_backend_runs_in_the_worker_process(tmp_path, monkeypatch):
    """runner.tracking.from_config wraps a backend that says background=True: its events and
    questions run in the tracking worker (another process), built there from its class and
    settings; a backend without it runs here."""
    import os

    from omegaconf import OmegaConf

    from runner.tracking import from_config
    from runner.tracking.none import NoTracking
    from runner.tracking.worker import Background

    backend, worker = elsewhere(tmp_path, monkeypatch, depth=3)
    assert type(backend) is Background and backend.target == "elsewhere_backend.Elsewhere"
    try:
        pid, config_hash, settings = backend.finished_run("h").split(" ", 2)
    finally:
        worker.close()
    assert int(pid) == worker.proc.pid != os.getpid() and config_hash == "h" and settings == "[('depth', 3)]"
    assert type(from_config(OmegaConf.create({"_target_": "runner.tracking.none.NoTracking"}))) is NoTracking


def test_work_queued_for_waits_runs_in_the_main_thread_while_the_worker_answers(tmp_path, monkeypatch):
    """runner.background.when_idle: a fused sweep writes its next job's files while the worker
    logs this job's run. The tasks run in the main thread during the wait, one after another,
    and the answer is the worker's."""
    import threading
    import time

    from runner import background

    backend, worker = elsewhere(tmp_path, monkeypatch)
    ran = []
    try:
        backend.finished_run("warm")  # the worker started and the module imported
        for n in range(3):
            background.when_idle(lambda n=n: ran.append((n, threading.current_thread() is threading.main_thread(),
                                                         time.perf_counter())))
        t0 = time.perf_counter()
        value = backend.final_loss_of("r")
        t1 = time.perf_counter()
    finally:
        background.drop_idle()
        worker.close()
    assert value == 1.5 and t1 - t0 >= 1.0
    assert [(n, main) for n, main, _ in ran] == [(0, True), (1, True), (2, True)]
    assert all(t0 <= t < t0 + 0.5 for _, _, t in ran)  # at the start of the wait, not after it
    assert not background.idle_waiting()


def test_a_record_logged_later_lets_the_command_go_on_and_its_error_reaches_its_job(tmp_path, monkeypatch):
    """Background.run_completed_later (a fused sweep's job): it returns the run's id at once while
    the worker logs the record; the command's next call to the worker (from any job's backend),
    and settle(), wait for the records sent before, in order, and hand each error to that
    record's `failed`, not to the call that found it."""
    import time

    from runner import tracking
    from runner.tracking import worker as tracking_worker
    from runner.tracking.base import RunRecord, RunStart

    log = tmp_path / "logged.txt"
    first, worker = elsewhere(tmp_path, monkeypatch, log=str(log))
    failed = []

    def job():  # each job builds its own backend; they share this command's worker
        backend = tracking.from_config(OmegaConf.create({"_target_": "elsewhere_backend.Elsewhere", "log": str(log)}))
        backend._worker = worker
        return backend

    def record(name, status="FINISHED"):
        return RunRecord(name=name, tags={}, params={}, scalars={}, curves={}, artifact_dir=tmp_path,
                         artifacts=[], status=status)

    def start(name):
        return RunStart(name=name, tags={}, config_hash=name, yield_to_finished=True)

    from omegaconf import OmegaConf

    try:
        a, b, c, d = first, job(), job(), job()
        assert a.run_started(start("a")) is None  # (a sweep's job waits for its run to open)
        t0 = time.perf_counter()
        assert a.run_completed_later(record("a"), failed.append) == "a"
        assert time.perf_counter() - t0 < 0.4 and not log.exists()  # sent; the worker logs it now (0.6 s)
        b.run_started(start("b"))  # waits for a's record first
        assert log.read_text() == "a\n"
        c.run_started(start("c"))
        assert b.run_completed_later(record("b", "BROKEN"), failed.append) == "b"
        assert c.run_completed_later(record("c"), failed.append) == "c"
        assert len(tracking_worker._DEFERRED) == 2  # b's and c's records, both on their way
        assert d.finished_run("h").endswith("h [('log', '" + str(log) + "')]")  # b's error is b's, not this call's
        assert [str(e) for e in failed] == ["cannot log b"] and log.read_text() == "a\nc\n"
        d.run_started(start("d"))
        d.run_completed_later(record("d"), failed.append)
        tracking.settle()  # the launcher's end: d logged
        assert log.read_text() == "a\nc\nd\n" and len(failed) == 1 and not tracking_worker._DEFERRED
    finally:
        tracking_worker._DEFERRED.clear()
        worker.close()


def test_the_worker_imports_with_the_settings_it_is_sent_and_collects_again_after(tmp_path, monkeypatch):
    """A worker started early (runner.tracking.worker.start_early) gets the backend's settings known
    before Hydra composes (its YAML, the command line's tracking.<key>=...) as its first request,
    through the pipe, never its command line (a URI may hold a password): the backend's
    preimport(settings) runs with the garbage collector off, then what it imported is frozen out of
    later collections and collection is on again."""
    import json

    from runner.tracking.worker import Client

    backend, _ = elsewhere(tmp_path, monkeypatch)
    log = tmp_path / "warm.json"
    secret = "http://user:s3cret@example.invalid"
    worker = Client(warm=("elsewhere_backend.Elsewhere", {"uri": secret, "log": str(log)}))
    backend._worker = worker
    try:
        import time

        deadline = time.time() + 30
        while not log.exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        collecting, frozen = backend.call("warmed")
    finally:
        worker.close()
    said = json.loads(log.read_text())
    assert said["settings"] == {"uri": secret, "log": str(log)}
    assert said["collecting"] is False and collecting is True and frozen > 1000
    assert not any(secret in a for a in said["argv"]) and not any(secret in a for a in worker.proc.args)


def test_start_early_reads_the_backends_yaml_and_the_command_lines_settings(tmp_path, monkeypatch):
    """What start_early sends: the chosen tracking YAML's settings (runner's mlflow.yaml by default),
    with the command line's tracking.<key>=value over them; no worker for tracking=none."""
    from runner import CONF_DIR
    from runner.tracking import worker as tracking_worker

    sent = []
    monkeypatch.setattr(tracking_worker, "client", lambda warm=None: sent.append(warm))
    tracking_worker.start_early(["model=coin", "tracking.uri=sqlite:////tmp/x.db", "++tracking.timeout=2"], CONF_DIR)
    tracking_worker.start_early(["tracking=none"], CONF_DIR)
    ((target, settings),) = sent
    assert target == "runner.tracking.mlflow.MlflowTracking"
    assert settings["uri"] == "sqlite:////tmp/x.db" and settings["timeout"] == "2"
    assert settings["experiment"] == "runner"


def test_the_mlflow_backend_imports_its_database_store_before_it_is_asked(tmp_path):
    """MlflowTracking.preimport with a database URI imports MLflow's SQLAlchemy store and maps its
    tables (what opening the store took after the command asked); another URI does not."""
    import subprocess
    import sys

    code = ("import sys; from runner.tracking.mlflow.backend import MlflowTracking; "
            "MlflowTracking.preimport({'uri': sys.argv[1]}); "
            "print('mlflow.store.tracking.sqlalchemy_store' in sys.modules)")
    said = [subprocess.run([sys.executable, "-c", code, uri], capture_output=True, text=True,
                           timeout=120).stdout.strip() for uri in (f"sqlite:///{tmp_path}/m.db", "http://127.0.0.1:9")]
    assert said == ["True", "False"]


def test_the_worker_finds_a_backends_class_as_hydra_does_without_importing_hydra(tmp_path, monkeypatch):
    """runner.tracking.worker.locate: the class a `_target_` names, the same object hydra.utils.get_class
    finds (a module's class, a class inside a class); a module that exists but fails on one of its own
    imports says which, and a name that is nowhere is an ImportError. The CLI's module imports no Hydra
    before it starts the worker (its import, ~0.1 s, would delay MLflow's in the worker)."""
    import subprocess
    import sys

    from hydra.utils import get_class

    from runner.tracking.worker import locate

    (tmp_path / "nested_backend.py").write_text("class Outer:\n    class Inner:\n        background = True\n")
    (tmp_path / "broken_backend.py").write_text("import no_such_module_here\n\nclass B:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for target in ("runner.tracking.mlflow.MlflowTracking", "runner.tracking.none.NoTracking",
                   "nested_backend.Outer.Inner"):
        assert locate(target) is get_class(target), target
    with pytest.raises(ModuleNotFoundError, match="no_such_module_here"):
        locate("broken_backend.B")
    with pytest.raises(ImportError):
        locate("no_such_package.Backend")
    code = "import sys, runner.__main__; print(sorted(m for m in ('hydra', 'omegaconf') if m in sys.modules))"
    said = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert said.stdout.strip() == "[]", said.stderr


def test_locate_says_which_module_is_missing_when_a_backends_own_import_fails(tmp_path, monkeypatch):
    """A backend module named like the module it fails to import (mlflow_like_backend imports
    mlflow_like, which is missing): the error names the missing module, not the target."""
    from runner.tracking.worker import locate

    (tmp_path / "mlflow_like_backend.py").write_text("import mlflow_like\n\nclass Tracking:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="'mlflow_like'"):
        locate("mlflow_like_backend.Tracking")
