"""Checks every command shares: a config's `_target_`s, and building one config node with Hydra
so that a failure is one ConfigError line (never a Hydra traceback). The keys' types and ranges:
runner/schema.py."""
from __future__ import annotations

from omegaconf import DictConfig, ListConfig

from runner.errors import ConfigError, describe


def check_targets(node, path: str = "") -> None:
    """Each `_target_` is a non-empty string. What the user types and the config files they point
    at are their own code: any target they name is used, as in Hydra. A config read back from a
    store is data: runner.predict and the pyfunc model hold it to runner.trust's rule."""
    if isinstance(node, DictConfig):
        for key in node.keys():
            child_path = f"{path}.{key}" if path else str(key)
            if key == "_target_":
                target = node._get_node(key)._value()
                if not isinstance(target, str) or not target.strip():
                    raise ConfigError(f"{child_path} must be a dotted path such as mymodels.MyModel, got {target!r}")
            else:
                check_targets(node._get_node(key), child_path)
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node._iter_ex(resolve=False)):
            check_targets(item, f"{path}[{i}]")


def instantiate(node, what: str):
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from omegaconf.errors import MissingMandatoryValue

    try:
        return instantiate(node)
    except MissingMandatoryValue as e:
        key = getattr(e, "full_key", None) or what
        if not str(key).startswith(what):  # a node copied out of its config: its keys lose the group
            key = f"{what}.{key}"
        hint = " (model=fn needs model.fn=module.function)" if key == "model.fn" else ""
        raise ConfigError(f"{key} is required: set {key}=...{hint}") from None
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(f"cannot build {what}: {describe(cause or e)}") from None


#: keys of the data group that are the fit's settings, not the loader's arguments
DATA_SETTINGS = ("batch_size",)


def load_data(node):
    """The data of a config's `data` node (None for none): its loader called with its own
    arguments, the fit's settings in the group (data.batch_size) left out."""
    from omegaconf import OmegaConf

    if not node:
        return None
    if any(k in node for k in DATA_SETTINGS):
        node = OmegaConf.masked_copy(node, [k for k in node if k not in DATA_SETTINGS])
    return instantiate(node, "data")
