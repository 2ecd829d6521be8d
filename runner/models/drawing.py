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
    """Component means as a grid of images (one mosaic in one axes: a figure of K axes spent a
    second laying itself out), each mixture weight written above its image."""
    side = image_side(dim)
    images = np.asarray(images, dtype=float)
    K = images.shape[0]
    cols = min(K, 5)
    rows = math.ceil(K / cols)
    h, w = (side, side) if side else (1, images.shape[-1])
    gap = max(1, h // 7)  # room between images for the weights
    mosaic = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap), np.nan)
    ax = fig.subplots()
    for k in range(K):
        r, c = divmod(k, cols)
        top, left = gap + r * (h + gap), gap + c * (w + gap)
        mosaic[top:top + h, left:left + w] = images[k].reshape(h, w)
        ax.text(left + w / 2, top - 0.5, f"{float(weights[k]):.2f}", ha="center", va="bottom", fontsize=9)
    ax.imshow(np.ma.masked_invalid(mosaic), cmap="gray", aspect="equal" if side else "auto")
    ax.axis("off")


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


MAX_MARGINALS, MAX_PAIRS = 8, 3


def _columns(samples: dict) -> list[tuple[str, np.ndarray]]:
    """(label, draws) per scalar element of each site, sites in order, vector sites element-wise."""
    cols = []
    for name, value in samples.items():
        x = np.asarray(value, dtype=float)
        if x.ndim == 0 or x.shape[0] < 2:
            continue
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] == 1:
            cols.append((name, flat[:, 0]))
        else:
            cols.extend((f"{name}[{i}]", flat[:, i]) for i in range(flat.shape[1]))
    return cols


def marginals(fig, samples: dict) -> None:
    """Marginal posterior histograms of the first sites' elements (top row) and a pair plot of
    the first few (below); a line of text when there is nothing to draw, never a blank figure."""
    cols = [(n, x) for n, x in _columns(samples) if np.isfinite(x).all()][:MAX_MARGINALS]
    if not cols:
        ax = fig.subplots()
        ax.axis("off")
        ax.text(0.5, 0.5, "no latent site with draws to show", ha="center", va="center")
        return
    pairs = [c for c in cols if np.ptp(c[1]) > 0][:MAX_PAIRS]
    pairs = pairs if len(pairs) > 1 else []
    n_top = len(cols)
    grid = fig.add_gridspec(max(1, len(pairs)), max(n_top, len(pairs)))
    from matplotlib.ticker import MaxNLocator

    point = all(np.ptp(x) == 0 for _, x in cols)
    for i, (name, x) in enumerate(cols):
        ax = fig.add_subplot(grid[0, i])
        if np.ptp(x) == 0:  # a point estimate (AutoDelta, MAP): its value, not a one-bin histogram
            ax.axvline(x[0], color="C3", lw=2)
            half = 0.5 * max(1.0, abs(float(x[0])))  # axvline does not move the x limits: centre them
            ax.set_xlim(x[0] - half, x[0] + half)
            ax.set_yticks([])
            ax.set_title(f"{name} = {x[0]:.4g}", fontsize=8)
        else:
            ax.hist(x, bins=40, density=True, color="C0", alpha=0.7)
            ax.set_title(name, fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(3))
        ax.tick_params(labelsize=6)
    for i, (ni, xi) in enumerate(pairs):
        for j, (nj, xj) in enumerate(pairs):
            if j >= i:
                continue
            ax = fig.add_subplot(grid[i, j])
            ax.scatter(xj, xi, s=2, alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(3))
            ax.set_xlabel(nj, fontsize=7)
            ax.set_ylabel(ni, fontsize=7)
            ax.tick_params(labelsize=6)
    fig.suptitle("point estimate" if point else "posterior marginals" + (" and pairs" if pairs else ""),
                 fontsize=10)
