"""`guide=manual`: the model's own hand-written guide, chosen by `guide.variant` (default: first)."""
from __future__ import annotations

from hydra.utils import get_method

from runner.errors import ConfigError


def manual(model, init_values=None, variant: str | None = None):
    return resolve(model, variant)(model, init_values)


def resolve(model, variant: str | None = None):
    """The builder for `model`'s manual guide `variant`; ConfigError if there is none."""
    from runner.models.base import Model

    if not isinstance(model, Model):  # its guides' dotted paths are imported: only a model's own
        raise ConfigError(f"guide=manual needs a runner model, got {type(model).__name__}")
    guides = model.manual_guides
    if not guides:
        raise ConfigError(f"model '{model.name}' has no manual guide: choose another guide= "
                          "(autodelta, autonormal, automvn, autolowrank, autolaplace, autoiaf, mixture)")
    if variant is None:
        variant = next(iter(guides))
    if variant not in guides:
        raise ConfigError(f"model '{model.name}' has no manual guide '{variant}': "
                          f"guide.variant must be one of {sorted(guides)}")
    return get_method(guides[variant])
