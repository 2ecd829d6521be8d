"""The Python API, for notebooks, tests and benchmarks: the CLI's config, built and fitted the
same way, without Hydra's runtime and without SystemExit. Errors are exceptions:
runner.errors.ConfigError (the input), TrackingError (the store), RunFailed (after the fit).

    import runner
    cfg, choices = runner.compose(["model=coin", "guide=beta", "tracking=none"])
    exp = runner.build(cfg)   # the typed experiment; refusals here, before any fit
    out = runner.fit(exp)     # a FitOutput, the same type for every method
    run = runner.run(["model=coin", "tracking=none"])   # the whole run: files, tracking, Outcome
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

CONF_DIR = str(Path(__file__).resolve().parent / "conf")  # = runner.CONF_DIR (the package imports this module)


@contextmanager
def config_errors():
    """Hydra's and OmegaConf's exceptions about what the caller gave (an unknown option or key, a
    sweep's `a=0,1`, a bad `${oc.env:...}`) as runner.errors.ConfigError, with the one line the
    CLI prints."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from runner.console import one_line
    from runner.errors import ConfigError

    try:
        yield
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(one_line(e)) from None


def compose(overrides: list[str] | tuple = (), config_dir: str | None = None):
    """(cfg, choices) for `python -m runner [--config-dir CONFIG_DIR] <overrides>`; ConfigError for
    any mistake in them."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    from runner.errors import ConfigError

    if isinstance(overrides, str):
        raise ConfigError(f"overrides must be a list of strings such as ['model=coin'], got the string {overrides!r}")
    overrides = list(overrides)
    options = [o for o in overrides if isinstance(o, str) and o.startswith("-")]
    if options:  # Hydra's lexer said "LexerNoViableAltException: --config-dir"
        hint = " (give its folder as config_dir=...)" if options[0].split("=")[0] in ("--config-dir", "-cd") else ""
        raise ConfigError(f"{options[0]} is a command-line option, not an override: the Python API takes "
                          f"overrides only{hint}, or run python -m runner {options[0]} ...")
    sweeps = [o for o in overrides if isinstance(o, str) and _is_sweep(o)]
    if sweeps:
        raise ConfigError(f"{sweeps[0]} is a sweep: the Python API runs one config (give one value, or run "
                          "python -m runner -m ... for a sweep)")
    if config_dir is not None:  # as --config-dir does: the user's folder is searched first
        if not Path(config_dir).is_dir():
            raise ConfigError(f"config_dir {config_dir} is not a folder")
        overrides.append(f"hydra.searchpath=[file://{Path(config_dir).resolve()}]")
    with config_errors(), initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = hydra_compose("config", overrides=overrides, return_hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    OmegaConf.set_readonly(cfg, False)
    return cfg, choices


def _is_sweep(override: str) -> bool:
    """`seed=0,1` or `x=range(...)`: Hydra's sweep syntax (a list `x=[0,1]` is one value)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(override).is_sweep_override()
    except Exception:  # Hydra's compose says what is wrong with it
        return False


def build(cfg):
    """The typed experiment (runner.experiment.Experiment) of a composed config; ConfigError if it
    cannot run."""
    from runner.experiment import build as build_experiment

    with config_errors():
        return build_experiment(cfg)


def fit(exp, progress: bool = False):
    """Fit a built experiment with its inference method, in memory (no files, no tracking): a
    runner.inference.FitOutput, the same type for every method (its draws, scalars, curves;
    `extras`: the method's own result). XLA's persistent compile cache (jax.cache_dir) is on, as
    in the CLI."""
    from runner.experiment import configure_jax
    from runner.inference import FitContext

    configure_jax(exp.cache_dir, exp.x64)
    return exp.inference.fit(exp, FitContext(progress="" if progress else None))


def run(overrides: list[str] | tuple = (), config_dir: str | None = None, run_dir: str | Path | None = None,
        quiet: bool = False):
    """The whole run, as `python -m runner <overrides>` does it: the run directory (default
    outputs/<date>/<time>, as Hydra's), the tracking backend of the config (`tracking=none` for
    none), the summary lines. Returns runner.app.Outcome (run_id, output, scalars, run_dir)."""
    import datetime

    from runner.app import start
    from runner.identity import CHOICE_GROUPS
    from runner.job import Job

    cfg, choices = compose(overrides, config_dir)
    if run_dir is None:
        now = datetime.datetime.now()
        run_dir = Path("outputs") / now.strftime("%Y-%m-%d") / now.strftime("%H-%M-%S-%f")
    job = Job(run_dir=Path(run_dir), choices={g: choices.get(g) for g in CHOICE_GROUPS}, overrides=tuple(overrides),
              quiet=quiet)
    return start(cfg, job)


def fit_config(overrides: list[str] | tuple = (), config_dir: str | None = None):
    """(experiment, the method's own result) for the composed config, for tests and benchmarks:
    SVI's FitResult (a list of them when replicates > 1), EM's EMResult, NUTS's NUTSResult."""
    cfg, _ = compose(overrides, config_dir)
    exp = build(cfg)
    extras = fit(exp).extras
    results = getattr(extras, "results", None)
    if results is not None:
        return exp, results[0] if len(results) == 1 else results
    return exp, extras
