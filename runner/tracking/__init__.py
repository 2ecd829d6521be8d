"""Where runs are recorded: lifecycle events and a few questions (runner/tracking/base.py,
`Tracking`). A backend is a module and a YAML file: conf/tracking/<name>.yaml names its class by
`_target_`, the other keys are its settings. Backends: `tracking=mlflow` (runner/tracking/mlflow/,
the only place that imports mlflow) and `tracking=none` (none.py: the run directory only). A
backend that says `background = True` runs in the tracking worker process (worker.py).
"""
from __future__ import annotations

from runner.errors import ConfigError, TrackingError  # noqa: F401 (TrackingError: re-exported)
from runner.tracking.base import Tracking


def from_config(node) -> Tracking:
    """The backend of a config's `tracking` node (its `_target_` and settings), checked to be a
    runner.tracking.Tracking; a background backend wrapped to run in the tracking worker."""
    from omegaconf import DictConfig, OmegaConf

    from runner.checks import instantiate

    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError(f"tracking must be a config group with a _target_ (a choice of conf/tracking/), got {node!r}")
    backend = instantiate(node, "tracking")
    if not isinstance(backend, Tracking):
        raise ConfigError(f"tracking._target_ must name a tracking backend (a runner.tracking.Tracking), "
                          f"got {type(backend).__name__}")
    if not backend.background:
        return backend
    from runner.tracking.worker import Background

    settings = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if not k.startswith("_")}
    cls = type(backend)
    return Background(backend, f"{cls.__module__}.{cls.__qualname__}", settings)


def settle() -> None:
    """Wait for the records a background backend logs while the command goes on (a fused sweep's
    jobs, runner.lifecycle.RunScope.complete); an error fails its job. Nothing to wait for when
    no backend ran in the background."""
    import sys

    worker = sys.modules.get("runner.tracking.worker")
    if worker is not None:
        worker.settle()


def reader(**settings) -> Tracking:
    """The store a side command reads (runner.compare, runner.predict): the default tracking
    choice's backend (conf/tracking/<choice>.yaml, as `python -m runner` composes it) with
    `settings` (uri, experiment, timeout) where they are given, in this process, checked
    read-only (a store that is not there is one TrackingError line, never a new store)."""
    from pathlib import Path

    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parent.parent / "conf"
    defaults = OmegaConf.to_container(OmegaConf.load(conf / "config.yaml")).get("defaults") or []
    choice = next(d["tracking"] for d in defaults if isinstance(d, dict) and "tracking" in d)
    node = OmegaConf.merge(OmegaConf.load(conf / "tracking" / f"{choice}.yaml"),
                           {k: v for k, v in settings.items() if v is not None})
    backend = from_config(node)
    backend = getattr(backend, "backend", backend)  # a background backend's own, here
    backend.check(create=False)
    return backend
