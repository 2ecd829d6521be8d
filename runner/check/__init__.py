"""Checks of the inference itself, not of one fit (`check=` config group, conf/check/): a check
wraps the configured method (runner.inference.Method) and is the run's method, so the run's
lifecycle, outputs and tracking are the same as a fit's. `check=none` (the default): no check.
A check is a module and a YAML file: conf/check/sbc.yaml names runner.check.sbc.SBC."""
from __future__ import annotations

from runner.errors import ConfigError


def check_settings(node) -> None:
    """The check's settings typed and range-checked (runner/schema.py: the fields of its dataclass),
    before JAX is imported (runner.experiment.build calls it with the other early refusals)."""
    import dataclasses

    from hydra.utils import get_object
    from omegaconf import DictConfig

    from runner import schema

    if not node:
        return
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError(f"check must be a config group with a _target_ (check=none|sbc), got {node!r}")
    try:
        cls = get_object(str(node._target_))
    except Exception:  # instantiate says what cannot be found
        return
    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
        schema.check_fields(cls, node, "check")


def from_config(node, method, model, data):
    """The run's method: `method` itself without a check, else the check built from `node` (its
    settings checked: `check_settings`) around `method`, its refusals said before any fit."""
    from runner.checks import instantiate

    if not node:
        return method
    check_settings(node)
    check = instantiate(node, "check")
    if not callable(getattr(check, "wrap", None)):
        raise ConfigError(f"check._target_ must name a check (with a wrap method), got {type(check).__name__}")
    return check.wrap(method, model, data)
