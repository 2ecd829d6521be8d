"""Small drawing helpers shared by model figures (matplotlib is imported by the caller's figure)."""
from __future__ import annotations

import math

import numpy as np


def normal_pdf(x, loc, scale):
    return np.exp(-0.5 * ((x - loc) / scale) ** 2) / (scale * math.sqrt(2 * math.pi))


def image_side(dim: int) -> int | None:
    """Side of a square image with `dim` pixels, or None if `dim` is not a square > 1."""
    side = math.isqrt(dim)
    return side if side > 1 and side * side == dim else None


def image_grid(fig, images, weights, dim: int) -> None:
    """Component means as a grid of images, mixture weights in the titles."""
    side = image_side(dim)
    images = np.asarray(images)
    K = images.shape[0]
    cols = min(K, 5)
    rows = math.ceil(K / cols)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for k, ax in enumerate(axes):
        ax.axis("off")
        if k < K:
            ax.imshow(images[k].reshape(side, side) if side else images[k][None, :], cmap="gray")
            ax.set_title(f"{float(weights[k]):.2f}", fontsize=9)


def density_with_samples(fig, log_density, samples, extent, title: str) -> None:
    """True (unnormalised) density as an image, guide samples scattered over it."""
    ax = fig.subplots()
    lo, hi = extent
    X, Y = np.meshgrid(np.linspace(lo, hi, 200), np.linspace(lo, hi, 200))
    Z = np.exp(np.asarray(log_density(X, Y), dtype=float))
    ax.imshow(Z[::-1], extent=[lo, hi, lo, hi], cmap="viridis")
    ax.scatter(np.asarray(samples["x"]), np.asarray(samples["y"]), s=2, c="w", alpha=0.2)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
