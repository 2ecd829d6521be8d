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


def sweep_plot(table: list[dict], curves: dict, path: Path) -> None:
    """A sweep's children: final loss per configuration (each seed a dot), and their loss curves."""
    plt = _plt()
    fig, (ax, ax1) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = [row["config"] for row in table]
    for i, row in enumerate(table):
        ax.errorbar([i], [row["mean"]], yerr=[row["std"]], fmt="o", color="C3", capsize=4)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("final loss (mean +- std over seeds)")
    ax.set_title("Sweep: final loss per configuration")
    for run_id, curve in curves.items():
        ax1.plot(curve, lw=0.8, alpha=0.7)
    ax1.set_xlabel("step")
    ax1.set_ylabel("loss")
    ax1.set_title(f"loss curves of {len(curves)} child run(s)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
