"""cfg -> a typed Experiment: the model, the data and the inference method (which builds its own
parts: SVI's guide, loss and optimizer), and every refusal that can be known before a fit starts
(one ConfigError line each). Nothing after build reads the config."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from runner.checks import check_targets, instantiate, load_data, positive_int
from runner.errors import ConfigError
from runner.redact import redact


SELECT = ("initial", "final")


@dataclass(frozen=True)
class Experiment:
    """Everything a run needs after `build`: the fit, its outputs and its tracking read this,
    never the config; nothing is set on it afterwards."""
    model: Any
    data: Any  # numpy array, dict of named numpy arrays (a function model's keyword arguments), or None
    inference: Any  # a runner.inference.Method with its settings (SVI: guide, loss, optimizer, steps, ...)
    seed: int
    restarts: int
    posterior_samples: int = 0
    progress: bool = True  # a progress line for long fits
    config_yaml: str = ""  # the resolved config, written as config.yaml
    params: dict = field(default_factory=dict)  # every leaf of the resolved config (MLflow params)
    config_hash: str = ""  # runner.identity.config_hash: a finished run of the same config is skipped
    data_source: str | None = None  # where the data came from (data.path, or the loader)
    cache_dir: str | None = None  # XLA's persistent compile cache
    checkpoint_every_s: float | None = 60.0  # a method that checkpoints writes its state this often (None: never)

    @property
    def method(self) -> str:
        return self.inference.name


def build(cfg: DictConfig, chash: str | None = None) -> Experiment:
    """The composed config -> a typed Experiment, or one ConfigError line: every refusal that
    can be known before a fit. `chash`: the config's hash when the caller already has it (a
    sweep's job checks it against the store first)."""
    from runner.inference import from_config
    from runner.identity import config_hash

    check_targets(cfg)
    restarts = positive_int(cfg, "restarts")
    positive_int(cfg, "steps"), positive_int(cfg, "replicates")
    if cfg.select not in SELECT:
        raise ConfigError(f"select must be one of {SELECT}, got {cfg.select!r}")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or not 0 <= cfg.seed < 2**31:
        # JAX keeps 32 bits of a seed: 2**32 would silently be seed 0
        raise ConfigError(f"seed must be an integer from 0 to {2**31 - 1}, got {cfg.seed!r}")
    if not isinstance(cfg.get("progress", True), bool):
        raise ConfigError(f"progress must be true or false, got {cfg.progress!r}")
    posterior_samples = cfg.get("posterior", {}).get("samples", 0)
    if not isinstance(posterior_samples, int) or isinstance(posterior_samples, bool) or posterior_samples < 0:
        raise ConfigError(f"posterior.samples must be an integer >= 0, got {posterior_samples!r}")
    inference = from_config(cfg.get("inference"))

    model = instantiate(cfg.model, "model")
    data = load_data(cfg.get("data"))
    data = model.bind(data)
    inference.prepare(cfg, model, data)
    if batch_size(cfg) is not None and not getattr(inference, "batch_size", None):
        raise ConfigError(f"data.batch_size applies to inference=svi, not inference={inference.name}")
    node = cfg.get("data") or {}
    cache = cfg.get("jax", {}).get("cache_dir")
    every = (cfg.get("checkpoint") or {}).get("every_s", 60.0)
    if every is not None and (isinstance(every, bool) or not isinstance(every, (int, float)) or not every > 0):
        raise ConfigError(f"checkpoint.every_s must be a positive number of seconds or null, got {every!r}")
    return Experiment(model=model, data=data, inference=inference, seed=cfg.seed, restarts=restarts,
                      posterior_samples=posterior_samples, progress=cfg.get("progress", True),
                      config_yaml=redact(OmegaConf.to_yaml(cfg, resolve=True)),
                      params={k: redact(v) for k, v in flatten(cfg).items()},
                      config_hash=chash or config_hash(cfg), cache_dir=str(cache) if cache else None,
                      checkpoint_every_s=None if every is None else float(every),
                      data_source=None if data is None else str(node.get("path") or node.get("_target_")))


def batch_size(cfg) -> int | None:
    """data.batch_size: the rows of the data each SVI step sees (None: all of them)."""
    value = (cfg.get("data") or {}).get("batch_size")
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ConfigError(f"data.batch_size must be a positive integer or null, got {value!r}")
    return value


def flatten(cfg: DictConfig) -> dict[str, str]:
    """Every leaf of the resolved config by dotted path (lists are leaves)."""
    out: dict[str, str] = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            out[prefix] = str(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out
