"""Figures written into the run directory (then logged as artifacts)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


MAX_CURVES = 300


def loss_plot(result, path: Path) -> None:
    """All trained restarts' loss curves, the selected one highlighted; initial losses beside."""
    plt = _plt()
    fig, (ax, ax0) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]})
    from matplotlib.collections import LineCollection

    steps = np.arange(result.losses.shape[1])
    others = [row for row in range(len(result.losses)) if row != result.best_row][:MAX_CURVES]
    if others:  # one collection, at most MAX_CURVES of them: 10,000 separate lines take seconds
        segments = np.stack([np.broadcast_to(steps, (len(others), len(steps))),
                             result.losses[others]], axis=-1)
        ax.add_collection(LineCollection(segments, colors="0.7", linewidths=0.5, alpha=0.5,
                                         label=f"other restarts ({len(others)} shown)"))
    ax.plot(steps, result.losses[result.best_row], color="C3", lw=1.5,
            label=f"selected restart {result.best} (final {result.final_loss:.4g})")
    finite = result.losses[np.isfinite(result.losses)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 100:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (negative ELBO)")
    ax.set_title(f"{len(result.trained)} trained restart(s) of {len(result.initial_losses)}")
    ax.legend()
    ax0.hist(result.initial_losses[np.isfinite(result.initial_losses)], bins=30, color="0.5")
    ax0.axvline(result.initial_loss, color="C3")
    ax0.set_title("initial losses")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def model_plot(model, result, data, path: Path) -> None:
    plt = _plt()
    fig = plt.figure(figsize=(8, 5))
    model.figure(fig, result.samples, None if data is None else np.asarray(data))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
