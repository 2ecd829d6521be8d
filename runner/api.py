"""Python entry points for tests, benchmarks and notebooks: compose a config the way the CLI does
(same defaults, same overrides) and fit it, without Hydra's run directory or MLflow."""
from __future__ import annotations


from runner import CONF_DIR


def compose(overrides: list[str] | tuple = (), config_dir: str | None = None):
    """(cfg, choices) for `python -m runner [--config-dir CONFIG_DIR] <overrides>`."""
    from pathlib import Path

    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    overrides = list(overrides)
    if config_dir is not None:  # as --config-dir does: the user's folder is searched first
        overrides.append(f"hydra.searchpath=[file://{Path(config_dir).resolve()}]")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = hydra_compose("config", overrides=overrides, return_hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    OmegaConf.set_readonly(cfg, False)
    return cfg, choices


def fit_config(overrides: list[str] | tuple = (), config_dir: str | None = None):
    """(experiment, FitResult) for the composed config; (experiment, [FitResult, ...]) when
    replicates > 1."""
    from runner.build import build
    from runner.fit import fit

    from runner.app import configure_jax

    cfg, _ = compose(overrides, config_dir)
    configure_jax(cfg)  # XLA's persistent compile cache (jax.cache_dir), as the CLI: repeated fits skip the compile
    exp = build(cfg)
    results = fit(exp)
    return exp, results[0] if exp.replicates == 1 else results
