"""Where runs are recorded, behind one small interface (runner/tracking/base.py, `Tracking`).

Backends: `tracking=mlflow` (runner/tracking/mlflow/: backend.py in this process, store.py in the
tracking worker process) and `tracking=none` (none.py: the run directory only). A backend is a
module and a YAML file: conf/tracking/<name>.yaml names its class by `_target_`. Only store.py
and pyfunc.py import mlflow; names of store.py are reachable here lazily.
"""
from __future__ import annotations

import os

from runner.errors import ConfigError, TrackingError  # noqa: F401 (TrackingError: re-exported)
from runner.tracking.base import Tracking

# MLflow 3 sends usage telemetry and waits for it at exit (about 1 s per process where the
# network is closed); off unless the user sets MLFLOW_DISABLE_TELEMETRY=false. Set here too: the
# worker inherits this process's environment.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

#: names of runner.tracking.mlflow.store available from here (runner.tracking.fetch_run, ...)
STORE_NAMES = ("Store", "store_lock", "log_batches", "log_files", "log_dataset", "curve_steps", "metric_name",
               "metric_safe", "list_runs", "fetch_run", "process_tags", "MAX_METRICS", "MAX_PARAMS", "MAX_TAGS",
               "MAX_PARAM_LEN")
MLFLOW_NAMES = ("MlflowTracking", "check_reachable", "check_timeout", "within", "REACH_TIMEOUT_S")


def __getattr__(name: str):
    if name in STORE_NAMES:
        from runner.tracking.mlflow import store

        return getattr(store, name)
    if name in MLFLOW_NAMES:
        from runner.tracking.mlflow import backend

        return getattr(backend, name)
    raise AttributeError(f"module 'runner.tracking' has no attribute {name!r}")


def from_config(node) -> Tracking:
    """The backend of a config's `tracking` node (its `_target_`)."""
    from omegaconf import DictConfig, OmegaConf

    from runner.checks import instantiate

    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError(f"tracking must be a config group with a _target_ (tracking=mlflow|none), got {node!r}")
    backend = instantiate(node, "tracking")
    if not isinstance(backend, Tracking):
        raise ConfigError(f"tracking._target_ must name a tracking backend (a runner.tracking.Tracking), "
                          f"got {type(backend).__name__}")
    return backend
