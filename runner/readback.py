"""Files read back from a store or a run directory, as untrusted data: whoever can write the
store's artifacts wrote them. Each reader checks a file's form (its first bytes, that it parses,
no pickles, no object arrays, numbers where numbers belong, every value finite) and says what is
wrong in one ConfigError line naming the file (and the run, in `what`); nothing in a file is ever
executed. Their meaning (shapes, a site's support) is for the caller, which knows the model
(runner/fitted.py); runner/loo.py and runner/job.py read netCDF files and checkpoints with these.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from runner.errors import ConfigError

#: the first bytes of a .npz (a zip archive; an empty zip has no entry to read)
NPZ_SIGNATURES = (b"PK\x03\x04",)


def first_bytes(path: Path, signatures: tuple, what: str, kind: str, then: str = "") -> None:
    """ConfigError unless the file starts as one of `signatures` (checked before anything parses
    it: a pickle, a text file or a file of zeros is refused unopened); `then` ends the line."""
    with open(path, "rb") as f:
        head = f.read(8)
    if not head.startswith(signatures):
        raise ConfigError(f"{what} is not {kind} (it starts {head[:8]!r}){then}")


def said(e: BaseException) -> str:
    """An error of a library reading a file, in a few words: its type and first line."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def load_npz(path: Path, what: str, numbers: bool = True) -> dict:
    """Every array of a .npz (no pickles), each read whole: a file cut short, not a .npz or
    holding object arrays is one line. `numbers`: each array must be of numbers (bool, int,
    float), finite."""
    first_bytes(path, NPZ_SIGNATURES, what, "a .npz file")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {name: f[name] for name in f.files}
    except Exception as e:  # a zip cut short, not a .npz, an object array (pickles are refused)
        raise ConfigError(f"{what} cannot be read ({said(e)}): cut short, or not written by runner") from None
    if numbers:
        for name, value in arrays.items():
            numeric(value, f"{what}: '{name}'")
    return arrays


def numeric(value, what: str) -> np.ndarray:
    """`value` as an array of finite numbers (ints or floats: not bools, strings, nested ragged
    lists or objects); ConfigError naming `what` otherwise."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):  # a ragged nested list
        raise ConfigError(f"{what} is not an array of numbers (its rows differ in length)") from None
    if array.dtype.kind not in "iuf":
        kind = {"b": "true/false", "U": "text", "S": "bytes", "O": "mixed values"}.get(array.dtype.kind, str(array.dtype))
        raise ConfigError(f"{what} holds {kind} where numbers belong")
    bad = int(array.size - np.isfinite(array).sum())
    if bad:
        raise ConfigError(f"{what} is NaN or inf at {bad} of {array.size} values")
    return array


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def load_json(path: Path, what: str):
    """A JSON file parsed strictly: NaN, Infinity and -Infinity (which Python writes and reads,
    but JSON has not) are refused, as is anything that is not JSON."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ConfigError(f"{what} is not JSON ({said(e).split(': ', 1)[-1]})") from None


def number_tree(tree, what: str) -> dict:
    """A JSON object of arrays (latents.json), or of objects of arrays (params.json: a parameter
    may be a pytree), read as {name: array of finite numbers}, nested as it was."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{what} is not a JSON object of named values")
    out = {}
    for name, value in tree.items():
        out[name] = number_tree(value, f"{what} '{name}'") if isinstance(value, dict) else numeric(value, f"{what}: '{name}'")
    return out
