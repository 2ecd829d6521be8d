"""runner/figures.py: a figure never kills a run. What used to raise (a histogram of one restart's
initial loss of 9e5: "Too many bins for data range") draws; what cannot be drawn is skipped with
one warning line and no file."""
from pathlib import Path

import numpy as np
import pytest

from runner import figures
from runner.inference.svi.program import FitResult


def result(initial, losses):
    losses = np.asarray(losses, np.float32)
    return FitResult(initial_losses=np.asarray(initial, np.float32), trained=np.arange(len(losses)),
                     losses=losses, grad_norms={}, final_losses=losses[:, -1], best=0, params={}, samples={},
                     deterministic=True, steps=np.arange(losses.shape[1]))


@pytest.mark.parametrize("initial, losses", [
    ([9.1e5], [[9.1e5, 9.0e5, 8.9e5]]),  # one restart at a large scale (seed 003's BMM on 5000 images)
    ([np.nan, 3.0], [[np.nan, np.nan, np.nan], [3.0, 2.0, 1.0]]),  # a diverged restart
    ([np.inf], [[np.inf, np.nan, np.nan]]),  # nothing finite at all
    ([1e-3, 1e9], [[1e-3, 1e-4, 1e-5], [1e9, 1e8, 1e7]]),  # twelve orders of magnitude
])
def test_loss_plot_draws_any_scale(tmp_path, initial, losses):
    assert figures.loss_plot(result(initial, losses), tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 1000


def test_a_figure_that_cannot_be_drawn_is_one_warning(tmp_path, capsys):
    class Broken:
        name = "broken"

        def figure(self, fig, samples, data):
            raise ValueError("no picture of this")

    drawn = figures.components_plot(Broken(), {"x": np.ones((3, 2))}, np.ones((4, 2)), tmp_path / "plots" / "broken.png")
    assert drawn is False and not (tmp_path / "plots" / "broken.png").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("runner: warning: figure broken.png skipped (ValueError: no picture of this")


def test_a_failing_model_figure_does_not_fail_the_run(tmp_path, capsys):
    """End to end in-process: the model's figure raises, the run finishes, the figure is not listed."""
    import runner
    from runner.models.coin import Coin

    original = Coin.figure
    Coin.figure = lambda self, fig, samples, data: (_ for _ in ()).throw(RuntimeError("figure bug"))
    try:
        out = runner.run(["model=coin", "guide=manual", "steps=100", "tracking=none"], run_dir=tmp_path / "run", quiet=True)
    finally:
        Coin.figure = original
    assert np.isfinite(out.final_loss)
    assert not (Path(out.run_dir) / "plots" / "coin.png").exists() and (Path(out.run_dir) / "plots" / "loss.png").exists()
    assert "runner: warning: figure coin.png skipped (RuntimeError: figure bug" in capsys.readouterr().err
