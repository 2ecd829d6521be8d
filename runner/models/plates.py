"""A user's data held against their model's plates, before any fit: one ConfigError line naming
the array and the plate, where NumPyro would fail later with a traceback (arrays of different
lengths, a plate sized by a number that disagrees with an array) or go on silently (a length-1
array broadcast over every row of a data plate, a plate of 7.5 rows)."""
from __future__ import annotations

import numpy as np
from numpyro.primitives import Messenger

from runner.errors import ConfigError


class whole_sizes(Messenger):
    """Refuse a plate whose size is not a whole number when it is entered (NumPyro rounds 7.5
    up to 8 rows and goes on). `names`: the model's scalar data, to say where a size came from."""

    def __init__(self, fn, model: str, constants: dict):
        super().__init__(fn)
        self.model, self.constants = model, constants

    def process_message(self, msg):
        if msg["type"] != "plate":
            return
        size = msg["args"][0] if msg.get("args") else None
        if size is None or isinstance(size, (int, np.integer)):
            return
        try:
            whole = float(size) == int(size) and float(size) >= 0
        except (TypeError, ValueError, OverflowError):  # a traced size: NumPyro says so itself
            return
        if not whole:
            raise ConfigError(f"model '{self.model}': plate '{msg['name']}' has size {size}{_source(size, self.constants)}: "
                              "a plate's size is a whole number of rows")


def _source(value, constants: dict) -> str:
    names = [k for k, v in constants.items() if isinstance(v, (int, float)) and v == value]
    return f" (data {names[0]!r})" if len(names) == 1 else ""


def _label(value, arrays: dict, site: str) -> str:
    """Which data array a site observes: the array itself (by identity, traced or concrete),
    else the one array of that shape, else the site."""
    for name, candidates in arrays.items():
        if any(value is c for c in candidates):
            return f"data {name!r}"
    shape = tuple(np.shape(value))
    same = [name for name, candidates in arrays.items() if tuple(np.shape(candidates[0])) == shape]
    return f"data {same[0]!r}" if len(same) == 1 else f"the value observed at site {site!r}"


def _plates(site) -> str:
    frames = site.get("cond_indep_stack") or []
    return "".join(f", plate {f.name!r} of {f.size}" for f in frames)


def check_observed(trace, arrays: dict, model: str) -> None:
    """Each observed site's value against the site's shape and its plates. `arrays`: data name ->
    the objects that stand for it (the traced and the concrete array)."""
    for name, site in trace.items():
        if site["type"] != "sample" or not site["is_observed"]:
            continue
        value, fn = site["value"], site["fn"]
        shape, expected = tuple(np.shape(value)), tuple(fn.batch_shape) + tuple(fn.event_shape)
        label = _label(value, arrays, name)
        try:
            np.broadcast_shapes(shape, expected)
        except ValueError:
            raise ConfigError(f"model '{model}': {label} has shape {shape}, but site {name!r} has shape "
                              f"{expected}{_plates(site)}: the data's lengths disagree") from None
        if not shape:  # one number observed everywhere: a constant of the model, not a data row
            continue
        for f in site.get("cond_indep_stack") or []:
            pos = f.dim - len(fn.event_shape)
            if f.size > 1 and (len(shape) < -pos or shape[pos] == 1):
                raise ConfigError(f"model '{model}': {label} has shape {shape}: one value would be broadcast over "
                                  f"the {f.size} rows of plate {f.name!r}; give one value per row")


def sizes(constants: dict, arrays: dict) -> str:
    """The data's sizes, for a model that fails on them: `; the data: x (8,), y (7,), N=10`."""
    parts = [f"{k} {tuple(np.shape(v))}" for k, v in arrays.items()]
    parts += [f"{k}={v}" for k, v in constants.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return f"; the data: {', '.join(parts)}" if parts else ""
