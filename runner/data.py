"""Data loaders named by `conf/data/*.yaml`. Each returns a float32 numpy array (or None)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runner.errors import ConfigError


def _finite(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.size == 0:
        raise ConfigError(f"data {what} is empty")
    if not np.isfinite(x).all():
        raise ConfigError(f"data {what} contains NaN or inf")
    return x


def values(values) -> np.ndarray:
    """Data written inline in the YAML (seed 000's five points)."""
    return _finite(np.array(list(values), dtype=np.float32), "values")


def coin_flips(heads: int, tails: int) -> np.ndarray:
    """`heads` ones then `tails` zeros, as seed 004 builds them."""
    if heads < 0 or tails < 0 or heads + tails == 0:
        raise ConfigError(f"data.heads and data.tails must be >= 0 and not both 0, got {heads}, {tails}")
    return np.concatenate([np.ones(heads), np.zeros(tails)]).astype(np.float32)


def file(path: str, delimiter: str = ",") -> np.ndarray:
    """A .npy, .npz (first array) or delimited text file of numbers; one row per data point."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"data file not found: {p}")
    try:
        if p.suffix == ".npy":
            x = np.load(p, allow_pickle=False)
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                x = z[z.files[0]]
        else:
            x = np.loadtxt(p, delimiter=delimiter, dtype=np.float32, ndmin=1)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read data file {p}: {e}") from None
    return _finite(x, str(p))


def digits(binarize: float | None = None, n: int | None = None) -> np.ndarray:
    """scikit-learn's bundled 8x8 digits (1797 images, no download), scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    x = load_digits().data.astype(np.float32) / 16.0
    if n is not None:
        x = x[: int(n)]
    if binarize is not None:
        x = (x > float(binarize)).astype(np.float32)
    return _finite(x, "digits")


def none() -> None:
    return None
