"""What every inference method provides to the runner (runner/app.py calls nothing else).

A method is a small object built by Hydra from `conf/inference/<name>.yaml`: its `_target_`
names the class, the other keys are its settings (the fields of its dataclass), typed and
range-checked by runner/schema.py before it is built (a ConfigError of one line). `prepare`
builds what the method needs from the rest of the config (SVI: the guide, loss and optimizer
groups) and refuses combinations that cannot work, before any fit. `fit` is
the compiled fit; `outputs` writes the run directory and says what to log.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.errors import ConfigError


@dataclass
class Child:
    """A run logged under this one (SVI replicates): its own files in its own folder."""
    name: str
    tags: dict
    params: dict
    scalars: dict
    curves: dict
    artifact_dir: Path
    artifacts: list
    curve_steps: list | None = None  # the step of each curve point (None: point i is step i)


@dataclass
class Report:
    """What one inference method produced, already written into the run directory."""
    scalars: dict  # metrics logged once
    curves: dict  # name -> per-step values (logged with steps)
    artifacts: list  # files relative to the run directory
    line: str  # the end-of-run summary (without the run id)
    key_derivation: str  # how the PRNG keys derive from the seed (a param)
    result: Any = None  # the method's result (FitResult, EMResult, NUTSResult)
    results: list | None = None  # SVI: one FitResult per replicate
    failed: str | None = None  # the fit failed (every restart diverged): why; the run ends FAILED
    tags: dict = field(default_factory=dict)  # extra tags (e.g. failure_step)
    children: list = field(default_factory=list)  # Child runs (SVI replicates)
    predictable: bool = False  # the run directory holds what runner.predict needs
    curve_steps: list | None = None  # the step of each curve point (None: point i is step i)


class Method:
    """Base of the inference methods; subclasses are dataclasses of their settings."""
    #: the method's name: the run's `inference` tag and the word in its summary line
    name: str = "method"
    #: the config groups whose choice acts on this method's result (tagged on its runs)
    groups: tuple = ("model", "data", "inference")
    #: True if the method fits `replicates` (seeds seed..seed+N-1) in one program
    replicates: int = 1

    def prepare(self, cfg, model, data) -> None:
        """Build what the method needs from the composed config, and refuse what cannot work
        with this model and data (ConfigError, one line). Called by runner.experiment, before any fit."""

    def fit(self, exp, progress=None):
        raise NotImplementedError

    def outputs(self, exp, result, run_dir: Path) -> Report:
        raise NotImplementedError

    def label(self, choices: dict) -> str:
        """The word after the model in run names and summary lines."""
        return self.name


def from_config(node) -> Method:
    """The inference method of a config's `inference` node (its `_target_` names the class), its
    settings checked first (`check_settings`)."""
    from omegaconf import DictConfig

    from runner.checks import instantiate

    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError(f"inference must be a config group with a _target_ (inference=svi|em|nuts), got {node!r}")
    check_settings(node)
    method = instantiate(node, "inference")
    if not isinstance(method, Method):
        raise ConfigError(f"inference._target_ must name an inference method (a runner.inference.Method), "
                          f"got {type(method).__name__}")
    return method


def check_settings(node) -> None:
    """The settings in an `inference` node, typed and range-checked before the method is built
    (runner/schema.py): each field of the method's dataclass by the range it declares
    (`schema.setting`) or, plain (`draws: int = 20000`), by its type: `inference.draws=abc` is
    one line, for a user's method too. A `_target_` that cannot be found is instantiate's to say."""
    import dataclasses

    from hydra.utils import get_object

    from runner import schema

    try:
        cls = get_object(str(node._target_))
    except Exception:
        return
    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
        schema.check_fields(cls, node, "inference")
