"""What every inference method provides to the runner (runner/app.py calls nothing else).

A method is a small object built by Hydra from `conf/inference/<name>.yaml`: its `_target_`
names the class, the other keys are its settings (the fields of its dataclass), typed and
range-checked by runner/schema.py before it is built (a ConfigError of one line). `prepare`
builds what the method needs from the rest of the config (SVI: the guide, loss and optimizer
groups) and refuses combinations that cannot work, before any fit. `fit` is the compiled fit and
returns a `FitOutput`, the same type for every method: runner/outputs.py turns it into the run
directory. A method's own files (SVI's loss figure, EM's components) come from its `extras`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from runner.errors import ConfigError, RunFailed


@dataclass
class Child:
    """A run recorded under this one (SVI's replicates): its own params.json and metrics.json in
    its own folder of the run directory."""
    name: str
    folder: str
    tags: dict
    params: dict  # the config params that differ from the parent's (seed)
    scalars: dict
    curves: dict
    curve_steps: list | None = None
    fitted: dict | None = None  # params.json


@dataclass
class FitOutput:
    """What every method's fit gives (the CLI writes it into the run directory; a notebook's
    runner.fit returns it)."""
    method: str
    scalars: dict  # metrics recorded once (final_loss where the method has an objective: SVI, EM)
    line: str  # the numbers of the summary line
    key_derivation: str  # how the PRNG keys derive from the seed (a param)
    curves: dict = field(default_factory=dict)  # name -> values of the selected fit
    curve_steps: list | None = None  # the step of each curve point (None: point i is step i)
    draws: dict = field(default_factory=dict)  # latent (and deterministic) site -> (chains, draws, ...)
    markov: bool = False  # the draws are Markov chains (their summary has n_eff and r_hat)
    params: dict | None = None  # the fitted parameters (params.json): a guide's, EM's
    latents: dict | None = None  # a point estimate of the latent sites (latents.json)
    assignments: dict | None = None  # the discrete sites' values, where the method has its own (EM)
    draw: Callable | None = None  # (num, key) -> num posterior draws of the latent sites (posterior.samples)
    tags: dict = field(default_factory=dict)
    failed: str | None = None  # why the fit failed (every restart diverged): the run ends FAILED
    children: list = field(default_factory=list)  # Child runs (SVI's replicates)
    extras: Any = None  # the method's own result (SVI: its FitResults; EM: EMResult; NUTS: NUTSResult)

    @property
    def final_loss(self) -> float | None:
        return self.scalars.get("final_loss")

    def flat(self) -> dict:
        """The draws with their chains joined: site -> (draws, ...)."""
        return {k: v.reshape(-1, *v.shape[2:]) for k, v in self.draws.items()}


@dataclass(frozen=True)
class FitContext:
    """What the run gives a fit beyond the experiment; a notebook's fit gets the defaults."""
    progress: str | None = None  # a progress line for long fits, with this label ("job 3/8 "); None: none
    checkpoint: Path | None = None  # where a method that checkpoints writes its state (checkpoint.npz)
    resume: Path | None = None  # a checkpoint.npz this fit continues, bit for bit
    safe_point: Callable | None = None  # called between chunks of a long fit: raises to stop it (Ctrl-C)


class Method:
    """Base of the inference methods; subclasses are dataclasses of their settings."""
    #: the method's name: the run's `inference` tag and the word in its summary line
    name: str = "method"
    #: the config groups whose choice acts on this method's result (tagged on its runs)
    groups: tuple = ("model", "data", "inference")
    #: the fit writes checkpoints (FitContext.checkpoint) and continues one (resume=)
    checkpoints: bool = False
    #: several experiments fit as one program (`fit_fused`: hydra/launcher=vectorized)
    fuses: bool = False

    def prepare(self, cfg, model, data) -> None:
        """Build what the method needs from the composed config, and refuse what cannot work
        with this model and data (ConfigError, one line). Called by runner.experiment, before any fit."""

    def prepare_like(self, cfg, model, data, other: "Method") -> None:
        """`prepare` for a config that differs from `other`'s (prepared for the same model and
        data) only in numbers a fused sweep varies (runner.fusion.signature): a method may take
        `other`'s parts instead of building them again."""
        self.prepare(cfg, model, data)

    def fit(self, exp, context: FitContext = FitContext()) -> FitOutput:
        raise NotImplementedError

    def fit_fused(self, exps: list, plan) -> list[FitOutput] | None:
        """Several experiments that differ only in numbers that keep the program's shapes (a fused
        sweep's group, runner.fusion: `plan` says which numbers differ, the pruning and the memory)
        fitted as one compiled program: each one's FitOutput, as its own fit would give it. None:
        this method fits one experiment at a time (the jobs then run one by one)."""
        return None

    def extras(self, exp, output: FitOutput, run_dir: Path) -> list[str]:
        """The method's own files in the run directory (its figures); their paths."""
        return []

    def simulation_fit(self, exp) -> Callable | None:
        """The fit of `exp` as a pure function (root key, data) -> latent site -> (draws, ...), to be
        vmapped over data sets that differ (runner/check/sbc.py: one program over simulations).
        None: this method fits one data set at a time (its `fit`)."""
        return None

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


#: what to try when a model's log density is not finite where a fit starts
START_REMEDIES = ("try jax.x64=true (float32 can overflow, or fail a Cholesky, where float64 does not), "
                  "check its priors and data (a value outside a distribution's support)")


def start_failure(error: BaseException, model_name: str, method: str, remedies: str) -> RunFailed | None:
    """NumPyro's failure to find initial values (`initialize_model`: `Cannot find valid initial
    parameters`, or the invalid parameter its validation finds there) as one line naming the model
    and what to try (a RunFailed: the open run ends FAILED, exit 1); None for any other error."""
    import traceback

    from runner.errors import describe

    frames = traceback.extract_tb(error.__traceback__) if error.__traceback__ else []
    if not isinstance(error, (RuntimeError, ValueError)) or not any(f.name == "initialize_model" for f in frames):
        return None
    return RunFailed(f"model '{model_name}' cannot start inference={method}: its log density is NaN or infinite "
                     f"at every initial value NumPyro tried ({describe(error)}); {remedies}")
