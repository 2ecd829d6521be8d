"""Every config key's type and range, in one place, with one message: `<key> must be <what>, got
<value!r>` (a ConfigError of one line: the CLI prints it and exits 2, before any fit).

- The vocabulary: a `Check` says what a value must be and tests it: `positive_int`, `integer(0)`,
  `integer(0, 2**31 - 1)`, `number(0)`, `positive` (finite), `probability`, `one_of(...)`,
  `boolean`, `string`, `optional(check)` (null allowed), `zero_or(check)` (0: off).
- `RUN`: the run-level keys of conf/config.yaml (and every data group's `data.batch_size`), each
  with its check; `runner.experiment.build` checks them all (`run_settings`) for every run.
- A component's settings are the fields of its dataclass, built by Hydra from its config node.
  A field declares its range with `setting(default, check)`; a plain typed field (`draws: int =
  20000`, `scale: float`, `kind: str`, `on: bool`, `X | None`) is checked by its type.
  `check_fields(cls, node, prefix)` checks a node against them before the component is built
  (`inference.iterations must be a positive integer, got 0`). A setting filled by interpolation
  (conf/inference/svi.yaml's `steps: ${steps}`) is named as the user typed it: `steps=abc` is
  `steps must be ...`, `inference.steps=abc` is `inference.steps must be ...`.
- `TRACKING`: the checks of the tracking backends' own keys (max_points_per_curve, timeout).

Why not Hydra structured configs (a ConfigStore schema): OmegaConf types a key when the config is
composed, in its own words over several lines (`Value 'abc' of type 'str' could not be converted
to Integer` plus `full_key: ...`), and has no ranges; the ranges would be checked here anyway. One
place, one message style, and a user's method typed by its plain annotations, without a schema of
its own to register.

Nothing heavy is imported here (OmegaConf only inside the functions that read a config node).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from runner.errors import ConfigError

__all__ = ["Check", "integer", "number", "positive_number", "one_of", "optional", "zero_or", "path",
           "positive_int", "positive", "probability", "boolean", "string", "RUN", "TRACKING", "run_settings",
           "setting", "check_fields", "lookup", "GUIDE", "guide_settings"]


@dataclass(frozen=True)
class Check:
    """One kind of value: `what` says it in the message (after "must be"), `accepts` tests it."""
    what: str
    accepts: Callable[[Any], bool]

    def __call__(self, key: str, value):
        """`value` when it is of this kind, else ConfigError `<key> must be <what>, got <value!r>`."""
        if not self.accepts(value):
            raise ConfigError(f"{key} must be {self.what}, got {value!r}")
        return value

    def about(self, note: str) -> Check:
        """The same check, its message saying what the value is: `a positive integer (the
        mixture's components)`."""
        return Check(f"{self.what} ({note})", self.accepts)


def is_int(value) -> bool:
    """An integer (true/false are not, though Python's bool is an int)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value) -> bool:
    """A number: an int or a float (true/false are not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(minimum: int | None = None, maximum: int | None = None) -> Check:
    """An integer, within [minimum, maximum] where given."""
    lo = -math.inf if minimum is None else minimum
    hi = math.inf if maximum is None else maximum
    if minimum is not None and maximum is not None:
        what = f"an integer from {minimum} to {maximum}"
    elif minimum == 1:
        what = "a positive integer"
    elif minimum is not None:
        what = f"an integer >= {minimum}"
    elif maximum is not None:
        what = f"an integer <= {maximum}"
    else:
        what = "an integer"
    return Check(what, lambda v: is_int(v) and lo <= v <= hi)


def number(minimum: float | None = None) -> Check:
    """A number; with `minimum`, a finite one >= minimum (NaN and inf are refused)."""
    if minimum is None:
        return Check("a number", is_real)
    return Check(f"a number >= {minimum:g}", lambda v: is_real(v) and math.isfinite(v) and v >= minimum)


def positive_number(what: str = "a positive finite number") -> Check:
    """A finite number > 0 (`what`: how the message says it, e.g. "a positive number of seconds")."""
    return Check(what, lambda v: is_real(v) and math.isfinite(v) and v > 0)


def one_of(*choices) -> Check:
    """One of `choices` (of the same type: true is not 1)."""
    return Check(f"one of {'|'.join(str(c) for c in choices)}",
                 lambda v: any(type(v) is type(c) and v == c for c in choices))


def optional(check: Check, null: str | None = None) -> Check:
    """`check`, or null (`null`: what null means, said in the message)."""
    what = f"{check.what} (or null: {null})" if null else f"{check.what} or null"
    return Check(what, lambda v: v is None or check.accepts(v))


def zero_or(check: Check, zero: str = "off") -> Check:
    """0 (`zero`: what 0 means), or `check`."""
    return Check(f"0 ({zero}) or {check.what}", lambda v: (is_int(v) and v == 0) or check.accepts(v))


def path(what: str) -> Check:
    """A non-empty name of a file, a folder or a run (a number is a name too: `resume=2024`)."""
    return Check(what, lambda v: is_int(v) or (isinstance(v, str) and bool(v.strip())))


positive_int = integer(1)
positive = positive_number()
probability = Check("in (0, 1)", lambda v: is_real(v) and 0 < v < 1)
boolean = Check("true or false", lambda v: isinstance(v, bool))
string = Check("a string", lambda v: isinstance(v, str))


class Key(NamedTuple):
    check: Check
    default: Any  # its value when a config lacks the key (conf/config.yaml sets every one)


#: The run-level keys: conf/config.yaml's, and `data.batch_size` of every data group. A component
#: whose settings come from one of them by interpolation (SVI's steps: ${steps}) uses its check.
RUN: dict[str, Key] = {
    "seed": Key(integer(0, 2**31 - 1), 0),  # JAX keeps 32 bits of a seed: 2**32 would silently be seed 0
    "steps": Key(positive_int, 1000),
    "restarts": Key(positive_int, 1),
    "replicates": Key(positive_int, 1),
    "select": Key(one_of("initial", "final"), "final"),
    "progress": Key(boolean, True),
    "timing": Key(boolean, False),
    "rerun": Key(boolean, False),
    "resume": Key(optional(path("a run directory or a run id of the store")), None),
    "posterior.samples": Key(integer(0), 0),
    "checkpoint.every_s": Key(optional(positive_number("a positive number of seconds")), 60),
    "stop.rtol": Key(optional(number(0), null="no early stopping"), None),
    "stop.patience": Key(positive_int, 1000),
    "stop.window": Key(positive_int, 500),
    "diagnostics.psis_draws": Key(zero_or(integer(10)), 1000),
    "data.batch_size": Key(optional(positive_int), None),
    "jax.cache_dir": Key(optional(path("a folder")), None),
    "jax.x64": Key(boolean, False),
}

#: A component's numbers that a refusal should not wait for JAX to name (a component checks them
#: again where it is built): `early_settings` checks them right after the run-level keys.
EARLY: dict[str, Check] = {
    # the optimizer's rate when it is a plain value (not a schedule node): runner.optim's own check
    "optim.lr": Check(positive.what, lambda v: v is None or not is_number_like(v) or positive.accepts(v)),
}


def early_settings(cfg) -> None:
    """Every EARLY key's value checked (absent: nothing to check), and runner's own guide's settings."""
    for key, check in EARLY.items():
        check(key, lookup(cfg, key, None))
    early_guide(cfg)


def early_guide(cfg) -> None:
    """The settings of a guide of runner's own (its guide._target_ in a module of runner/guides/,
    found without running it) that GUIDE ranges, checked before JAX is imported (the guide function
    checks them again when it is called). A user's guide checks its own."""
    import importlib.util
    from pathlib import Path

    target = lookup(cfg, "guide._target_", None)
    if not isinstance(target, str) or "." not in target:
        return
    try:
        spec = importlib.util.find_spec(target.rpartition(".")[0])
    except (ImportError, ValueError):
        return  # building the guide says what is wrong
    guides = Path(__file__).resolve().parent / "guides"
    if spec is None or not spec.origin or Path(spec.origin).resolve().parent != guides:
        return
    absent = object()
    for key, check in GUIDE.items():
        value = lookup(cfg, key, absent)
        if value is not absent:
            check(key, value)


def is_number_like(value) -> bool:
    """A plain value a user typed for a number (a string or a number), not a node or a callable."""
    return isinstance(value, (str, int, float))


#: The tracking backends' own keys (a backend checks them; SVI's curve_points takes the first).
TRACKING: dict[str, Check] = {
    "tracking.max_points_per_curve": optional(integer(2)),
    "tracking.timeout": positive_number("a positive number of seconds"),
}


def positive_ints() -> Check:
    """A non-empty list of positive integers (a network's layer widths)."""
    def accepts(v):
        return (not isinstance(v, (str, bytes)) and hasattr(v, "__len__") and len(v) > 0
                and all(is_int(x) and x >= 1 for x in v))

    return Check("a list of positive integers", accepts)


#: runner's own guides' settings (runner/guides/): each guide function checks the ones it takes
#: (`guide_settings`) before NumPyro sees them (rank=0 was a ZeroDivisionError in the guide's
#: trace, num_flows=0 an IndexError, init_scale=-1 a NaN first loss)
GUIDE: dict[str, Check] = {
    "guide.init_scale": positive,
    "guide.rank": optional(positive_int, "NumPyro's default"),
    "guide.num_flows": positive_int,
    "guide.hidden_dims": optional(positive_ints(), "NumPyro's default"),
    "guide.K": positive_int.about("the mixture's components"),
    "guide.init_spread": number(0),
}


def guide_settings(**values) -> None:
    """Each of a guide's settings (by name: init_scale=...) checked against GUIDE."""
    for name, value in values.items():
        GUIDE[f"guide.{name}"](f"guide.{name}", value)


def lookup(node, key: str, default=None):
    """The value at dotted `key` of a config node (resolved; `default` where there is none), or a
    ConfigError line: `key is required` for ???, `key cannot be resolved` for a broken interpolation."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    if not OmegaConf.is_config(node):
        return node.get(key, default)
    try:
        return OmegaConf.select(node, key, default=default, throw_on_missing=True)
    except MissingMandatoryValue:
        raise ConfigError(f"{key} is required: set {key}=...") from None
    except OmegaConfBaseException as e:
        first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise ConfigError(f"{key} cannot be resolved: {first}") from None


def run_settings(cfg) -> dict[str, Any]:
    """Every run-level key's value (RUN's default where the config lacks it), checked."""
    return {key: check(key, lookup(cfg, key, default)) for key, (check, default) in RUN.items()}


#: the metadata key under which a dataclass field keeps its Check
CHECK = "runner.schema"


def setting(default, check: Check, **kwargs):
    """A dataclass field with its range: `iterations: int = setting(100, positive_int)`."""
    import dataclasses

    return dataclasses.field(default=default, metadata={CHECK: check}, **kwargs)


#: the check of a plain typed field
TYPES = {int: integer(), float: number(), str: string, bool: boolean}

#: `${key}` or `${oc.select:key,default}`: a setting filled from the key a user types
SOURCE = re.compile(r"\$\{(?:oc\.select:)?([A-Za-z_][\w.]*)(?:,[^}]*)?\}")


def source(node, name: str) -> str | None:
    """The key whose value `node.name` takes by interpolation (`steps` for `steps: ${steps}`)."""
    from omegaconf import OmegaConf

    if not OmegaConf.is_config(node) or not OmegaConf.is_interpolation(node, name):
        return None
    match = SOURCE.fullmatch(str(node._get_node(name)._value()))
    return match.group(1) if match else None


def field_types(cls) -> dict:
    """A dataclass's resolved annotations ({} where they do not resolve: only declared ranges count)."""
    import typing

    try:
        return typing.get_type_hints(cls)
    except Exception:
        return {}


def type_parts(hint) -> tuple[Any, bool]:
    """(the type, whether null is allowed) of an annotation: `int | None` -> (int, True)."""
    import types
    import typing

    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        return (rest[0] if len(rest) == 1 else None), len(rest) < len(typing.get_args(hint))
    return hint, False


def check_fields(cls, node, prefix: str) -> None:
    """The settings in `node` (a config node or a dict) of the dataclass `cls`, before it is built:
    each by the check its field declares (`setting`), else by its type (int, float, str, bool, and
    `| None`); a field typed as a dataclass, given a mapping, by that dataclass's fields. A key is
    named `<prefix>.<field>`, or by the key it is interpolated from. Fields not set in the node
    keep their defaults; keys that are no field are the constructor's to refuse."""
    import dataclasses
    from collections.abc import Mapping

    hints = field_types(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.name not in node:
            continue
        key = source(node, f.name) or f"{prefix}.{f.name}"
        value = lookup(node, f.name)
        kind, nullable = type_parts(hints.get(f.name))
        if isinstance(value, Mapping) and isinstance(kind, type) and dataclasses.is_dataclass(kind):
            check_fields(kind, value, key)
            continue
        check = f.metadata.get(CHECK) or TYPES.get(kind)
        if check is not None:
            (optional(check) if nullable and CHECK not in f.metadata else check)(key, value)
