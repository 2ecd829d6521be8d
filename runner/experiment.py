"""cfg -> a typed Experiment: the model, the data and the inference method (which builds its own
parts: SVI's guide, loss and optimizer), and every refusal that can be known before a fit starts
(one ConfigError line each). Nothing after build reads the config."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from runner.checks import check_targets, instantiate, load_data
from runner.errors import ConfigError
from runner.redact import redact


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
    x64: bool = False  # jax.x64: float64 arrays and data (set_precision)
    # what build made, for the fit's kept programs (runner.inference.program_cache); None: traced every time.
    # Not an init field: dataclasses.replace(exp, ...) (a restarts, data or method of another's) drops it
    built: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def method(self) -> str:
        return self.inference.name


def check_draws(model, data, samples: int) -> None:
    """posterior.samples predictive draws of every site are kept in memory (and written): refused
    in one line before the run opens when they cannot be."""
    if not samples:
        return
    from runner.inference.budget import check_bytes
    from runner.posterior import draw_bytes

    check_bytes(int(samples) * draw_bytes(model, data), f"posterior.samples={samples} (the posterior predictive draws)",
                "fewer posterior.samples")


def build(cfg: DictConfig, chash: str | None = None) -> Experiment:
    """The composed config -> a typed Experiment, or one ConfigError line: every refusal that
    can be known before a fit. `chash`: the config's hash when the caller already has it (a
    sweep's job checks it against the store first)."""
    from runner import check, schema
    from runner.identity import config_hash
    from runner.inference import from_config

    check_targets(cfg)
    run = schema.run_settings(cfg)  # the run-level keys, typed and range-checked (runner/schema.py)
    schema.early_settings(cfg)  # and what else can be refused before JAX is imported
    inference = from_config(cfg.get("inference"))  # its settings checked: no array is made
    check.check_settings(cfg.get("check"))  # check=sbc's too
    from runner import figures

    # nothing refused so far: the figures' process imports matplotlib while JAX imports here
    figures.start_helper((str(cfg.model.get("_target_") or "").rpartition(".")[0],))  # the model's figure names it
    x64 = set_precision(run["jax.x64"])  # before the data are loaded and any array is made (JAX imported here)

    model = instantiate(cfg.model, "model")
    data = load_data(cfg.get("data"))
    data = model.bind(data)
    inference.prepare(cfg, model, data)
    inference = check.from_config(cfg.get("check"), inference, model, data)  # check=sbc: the run is the check
    check_draws(model, data, run["posterior.samples"])
    if run["data.batch_size"] is not None and not getattr(inference, "batch_size", None):
        raise ConfigError(f"data.batch_size applies to inference=svi, not inference={inference.name}")
    node = cfg.get("data") or {}
    cache, every = run["jax.cache_dir"], run["checkpoint.every_s"]
    built = None
    if cache:
        from runner.inference import program_cache

        built = program_cache.Built.of(program_cache.config_key(cfg, model), model, data, inference)
    exp = Experiment(model=model, data=data, inference=inference, seed=run["seed"], restarts=run["restarts"],
                     posterior_samples=run["posterior.samples"], progress=run["progress"],
                     config_yaml=redact(OmegaConf.to_yaml(cfg, resolve=True)),
                     params={k: redact(v) for k, v in flatten(cfg).items()},
                     config_hash=chash or config_hash(cfg), cache_dir=str(cache) if cache else None,
                     checkpoint_every_s=None if every is None else float(every), x64=x64,
                     data_source=None if data is None else str(node.get("path") or node.get("_target_")))
    object.__setattr__(exp, "built", built)  # frozen: set once, here
    return exp


def build_like(cfg: DictConfig, chash: str, like: Experiment) -> Experiment:
    """A fused sweep's job (runner.fusion) whose config differs from `like`'s only in the numbers
    the group varies and in what acts after the fit: `like`'s model and data, the method's parts
    taken from `like`'s (Method.prepare_like), and this config's own seed, method settings,
    optimizer, run settings, config text, params and hash."""
    import dataclasses

    from runner import check, schema
    from runner.inference import from_config

    check_targets(cfg)
    run = schema.run_settings(cfg)
    inference = from_config(cfg.get("inference"))
    inference.prepare_like(cfg, like.model, like.data, getattr(like.inference, "method", like.inference))
    inference = check.from_config(cfg.get("check"), inference, like.model, like.data)  # as build does
    check_draws(like.model, like.data, run["posterior.samples"])
    every = run["checkpoint.every_s"]
    return dataclasses.replace(
        like, inference=inference, seed=run["seed"], posterior_samples=run["posterior.samples"],
        progress=run["progress"], config_yaml=redact(OmegaConf.to_yaml(cfg, resolve=True)),
        params={k: redact(v) for k, v in flatten(cfg).items()}, config_hash=chash,
        checkpoint_every_s=None if every is None else float(every))


def configure_jax(cache_dir: str | None, x64: bool | None = None) -> None:
    """XLA's persistent compile cache: repeated runs skip the compile. `x64`: the experiment's
    float width, set again (another experiment built since may have changed it)."""
    import jax

    if x64 is not None:
        set_precision(x64)
    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(cache_dir))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def set_precision(x64: bool) -> bool:
    """JAX's float width for this run, set before its data are loaded: float64 with jax.x64=true
    or JAX_ENABLE_X64=1 in the environment (as JAX reads it), else float32 (also after an earlier
    float64 run in this process: a sweep over jax.x64). Returns whether it is float64."""
    import os

    import jax

    on = bool(x64) or os.environ.get("JAX_ENABLE_X64", "").lower() in ("1", "true", "t", "yes", "y", "on")
    jax.config.update("jax_enable_x64", on)
    return on


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
