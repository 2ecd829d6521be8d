"""Optional engines and the pyproject.toml extra that brings each: `pip install runner` is the
runner itself (Hydra, NumPyro, MLflow, ArviZ); a Ray cluster, SLURM, an Optuna search and the
L-BFGS optimizer are extras. A choice whose extra is not installed is one line naming it, exit 2,
before anything is created (never an ImportError traceback, nor a Hydra "could not find" line).

Nothing here imports the engines: `importlib.util.find_spec` looks for them.
"""
from __future__ import annotations

import importlib.util
import re
from typing import NamedTuple

from runner.errors import ConfigError


class Extra(NamedTuple):
    name: str  # the extra of pyproject.toml: pip install 'runner[<name>]'
    modules: tuple[str, ...]  # what it must make importable
    what: str  # the engine, for the message

    @property
    def missing(self) -> bool:
        return not all(installed(m) for m in self.modules)


#: a config choice (group, option) and the extra it needs
CHOICES: dict[tuple[str, str], Extra] = {
    ("hydra/launcher", "ray"): Extra("ray", ("ray", "hydra_plugins.hydra_ray_launcher"), "Ray"),
    ("hydra/launcher", "slurm"): Extra("slurm", ("submitit", "hydra_plugins.hydra_submitit_launcher"), "submitit"),
    ("hydra/sweeper", "optuna"): Extra("optuna", ("optuna",), "Optuna"),
    ("optim", "lbfgs"): Extra("lbfgs", ("jaxopt",), "JAXopt's L-BFGS"),
}


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that is not there
        return False


def message(group: str, option: str, extra: Extra) -> str:
    return (f"{group}={option} needs {extra.what}, an optional part of runner: "
            f"pip install 'runner[{extra.name}]' (or 'runner[all]')")


def require(group: str, option: str) -> None:
    """ConfigError naming the extra when the choice's extra is not installed."""
    extra = CHOICES[(group, option)]
    if extra.missing:
        raise ConfigError(message(group, option, extra))


CHOICE = re.compile(r"^[+~]*([\w/]+)=([\w,]+)$")  # a choice, or a sweep's list of them


def check_overrides(overrides: list[str]) -> str | None:
    """The first command-line choice (`hydra/launcher=ray`, `optim=lbfgs`) whose extra is missing,
    said in one line; None when every chosen engine is installed."""
    for arg in overrides:
        m = CHOICE.match(arg)
        for option in m.group(2).split(",") if m else ():
            extra = CHOICES.get((m.group(1), option))
            if extra and extra.missing:
                return message(m.group(1), option, extra)
    return None
