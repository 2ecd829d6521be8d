"""A sweep's job configs composed once per choice of config groups (hydra/launcher=vectorized).

Hydra composes every job of a sweep from scratch, twice: the sweeper checks the batch
(`validate_batch_is_legal`), then the launcher composes it again; each compose reads the defaults
list and every YAML file of it (~0.13 s a job here, 8.6 s of a 32-job sweep's 36 s). Jobs that
differ only in values (`optim.lr=0.1 seed=3`, not `model=coin`) share everything but those
values. `Composer` wraps the sweep's config loader: the first job of each choice of config groups
is composed by Hydra; the others are a copy of it with their own values set the way Hydra sets
a command-line value (ConfigLoaderImpl._apply_overrides_to_config), their own hydra.overrides and
hydra.job.override_dirname. tests/unit/test_vectorized_compose.py checks it gives Hydra's config
exactly, for every kind of override. Anything else (a `+`/`~`/`++` override, a package, a dict or
list value, a key that turns out to be a config group) is composed by Hydra.
"""
import copy
from typing import Any, List

from omegaconf import DictConfig, OmegaConf, open_dict


class Composer:
    """Hydra's config loader with `load_sweep_config` cached as the module says; everything else
    is the loader's own."""

    def __init__(self, loader) -> None:
        self.loader = loader
        self.cache: dict = {}  # (other overrides, value keys) -> a composed config, or None: never reuse
        self.groups: set = set()  # the config groups of every config composed so far
        self.hits = 0

    def key(self, parsed: list) -> tuple:
        """(what the job's config is composed from besides its values, its value overrides)."""
        values, others = [], []
        for o in parsed:
            (values if plain_value(o) and o.key_or_group not in self.groups else others).append(o)
        return (tuple(o.input_line for o in others), tuple(o.key_or_group for o in values)), values

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: List[str]) -> DictConfig:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
        from hydra.core.override_parser.overrides_parser import OverridesParser

        hydra_overrides = list(OmegaConf.to_container(master_config.hydra.overrides.hydra))
        try:
            parsed = OverridesParser.create().parse_overrides(hydra_overrides + list(sweep_overrides))
        except Exception:  # Hydra says what is wrong with it, in its own words
            return self.loader.load_sweep_config(master_config, sweep_overrides)
        key, values = self.key(parsed)
        if key not in self.cache:
            cfg = self.loader.load_sweep_config(master_config, sweep_overrides)
            self.groups |= set(cfg.hydra.runtime.choices or {})  # a key found to be a config group
            key, values = self.key(parsed)
            self.cache[key] = copy.deepcopy(cfg) if reusable(parsed, values) else None
            return cfg
        base = self.cache[key]
        if base is None:
            return self.loader.load_sweep_config(master_config, sweep_overrides)
        self.hits += 1
        cfg = copy.deepcopy(base)
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        app = [o for o in parsed if not o.is_hydra_override()]
        with open_dict(cfg.hydra):
            cfg.hydra.overrides.task = [o.input_line for o in app]
            cfg.hydra.overrides.hydra = [o.input_line for o in parsed if o.is_hydra_override()]
            dirname = cfg.hydra.job.config.override_dirname
            cfg.hydra.job.override_dirname = get_overrides_dirname(
                overrides=app, kv_sep=dirname.kv_sep, item_sep=dirname.item_sep, exclude_keys=dirname.exclude_keys)
        OmegaConf.copy_cache(from_config=master_config, to_config=cfg)
        return cfg


def reusable(parsed: list, values: list) -> bool:
    """Whether setting the values last gives Hydra's config: no other override (a `++`, `+` or `~`)
    acts on a value's key, or on a node above or below it (Hydra applies them in their order)."""
    from hydra.core.override_parser.types import OverrideType

    keys = [o.key_or_group for o in values]
    others = [o.key_or_group for o in parsed if o.type != OverrideType.CHANGE and not o.is_hydra_override()]
    return not any(k == o or k.startswith(o + ".") or o.startswith(k + ".") for k in keys for o in others)


def plain_value(override) -> bool:
    """`key=value` of a config value (not a group, not hydra's own, not a sweep, +, ++ or ~), whose
    value is a scalar: setting it on a copy is what Hydra's compose does with it."""
    from hydra.core.override_parser.types import OverrideType

    if override.type != OverrideType.CHANGE or override.package is not None or override.is_hydra_override():
        return False
    if override.is_sweep_override() or "/" in override.key_or_group:
        return False
    return not isinstance(override.value(), (dict, list))


def install(hydra_context) -> Composer:
    """The sweep's loader (the sweeper's batch check and this launcher share `hydra_context`)
    wrapped in a Composer, once."""
    loader = hydra_context.config_loader
    if not isinstance(loader, Composer):
        hydra_context.config_loader = Composer(loader)
    return hydra_context.config_loader
