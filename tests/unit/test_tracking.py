"""runner/tracking: one interface (base.Tracking, no-op methods), backends chosen by `_target_`
(default: MLflow; none), and what the none backend records: nothing outside the run directory."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import runner
from runner.errors import ConfigError
from runner.tracking import Tracking, from_config
from runner.tracking.none import NoTracking


def test_default_is_mlflow_with_its_settings():
    from runner.tracking.mlflow import MlflowTracking
    from runner.tracking.worker import Background

    cfg, _ = runner.compose(["tracking.uri=sqlite:///x.db", "tracking.max_points_per_curve=10"])
    backend = from_config(cfg.tracking)  # MLflow's work runs in the tracking worker: wrapped
    assert type(backend) is Background and type(backend.backend) is MlflowTracking
    assert backend.target == "runner.tracking.mlflow.backend.MlflowTracking"
    assert backend.settings == {"uri": "sqlite:///x.db", "experiment": "runner", "timeout": 5,
                                "max_points_per_curve": 10, "log_model": True}
    mlflow = backend.backend
    assert (mlflow.uri, mlflow.experiment, mlflow.max_points, mlflow.log_model) == ("sqlite:///x.db", "runner", 10, True)
    assert backend.look().endswith("mlflow ui --backend-store-uri sqlite:///x.db")


def test_the_mlflow_ui_hint_works_as_printed_with_or_without_the_venv_on_path(monkeypatch, tmp_path):
    """`make run` leaves an environment that is not activated: the hint then names its mlflow by
    path; activated (its bin first on PATH), plain `mlflow`."""
    import os
    import sys
    from pathlib import Path

    from runner.tracking.mlflow.backend import mlflow_command

    mine = Path(sys.executable).parent / "mlflow"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", f"{mine.parent}{os.pathsep}/usr/bin:/bin")
    assert mlflow_command() == "mlflow"
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert mlflow_command() == str(mine)  # from a folder elsewhere: the whole path
    monkeypatch.chdir(mine.parent.parent.parent)  # the project folder, where `make run` ran
    assert mlflow_command() == os.path.join(mine.parent.parent.name, "bin", "mlflow")


def test_none_and_a_node_without_target():
    cfg, _ = runner.compose(["tracking=none"])
    assert type(from_config(cfg.tracking)) is NoTracking
    with pytest.raises(ConfigError, match="tracking must be a config group with a _target_"):
        from_config(OmegaConf.create({"uri": "sqlite:///y.db", "experiment": "e"}))
    with pytest.raises(ConfigError, match="tracking._target_ must name a tracking backend"):
        from_config(OmegaConf.create({"_target_": "builtins.dict"}))


def test_the_interface_records_nothing_by_default(tmp_path):
    from runner.tracking.base import RunEnd, RunRecord, RunStart, SweepStart

    t = Tracking()
    t.check(), t.check_params({"a": 1}), t.connect()
    assert t.run_started(RunStart(name="r", tags={}, config_hash="h")) is None
    record = RunRecord(name="r", tags={}, params={}, scalars={"x": 1.0}, curves={}, artifact_dir=tmp_path, artifacts=[])
    assert t.run_completed(record) is None and t.child_logged(record) is None and t.flush() is None
    assert t.run_failed(RunEnd()) is None and t.run_killed(RunEnd()) is None
    assert t.finished_run("abc") is None and t.children("p") is None and t.look() is None
    assert t.run_dir_of("abc") is None
    assert t.sweep_started(SweepStart(name="s", sweep_hash="h", tags={}, description="", reuse=True)) == (None, False)
    assert list(tmp_path.iterdir()) == []


def test_a_backend_defined_here_receives_the_run(tmp_path):
    """A backend is a Tracking subclass named by `_target_`: it gets the run's record."""
    import sys
    import types

    seen = []

    class Recorder(Tracking):
        def __init__(self, **settings):
            pass

        def run_completed(self, record):
            seen.append(vars(record))
            return "recorded-1"

    module = types.ModuleType("recorder_backend")
    module.Recorder = Recorder
    Recorder.__module__ = module.__name__
    sys.modules[module.__name__] = module
    try:
        out = runner.run(["model=coin", "guide=manual", "steps=300", "tracking=none",
                          "tracking._target_=recorder_backend.Recorder"], run_dir=tmp_path / "run", quiet=True)
    finally:
        del sys.modules[module.__name__]
    assert out.run_id == "recorded-1" and len(seen) == 1
    record = seen[0]
    assert record["status"] == "FINISHED" and record["tags"]["inference"] == "svi"
    assert record["tags"]["guide"] == "manual" and record["params"]["steps"] == "300"
    assert record["scalars"]["final_loss"] == pytest.approx(out.final_loss)
    assert len(record["curves"]["loss"]) == 300
    assert all((Path(record["artifact_dir"]) / a).is_file() for a in record["artifacts"])
