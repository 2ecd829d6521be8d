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


def test_one_restarts_loss_plot_is_one_panel_with_its_initial_loss_in_the_title(tmp_path, monkeypatch):
    """Several restarts: the curves and, beside them, the initial losses' histogram; one restart:
    the curve alone (a panel of one line cost a third of the figure), its initial loss in the title."""
    import matplotlib.axes
    from PIL import Image

    titles = []

    real = matplotlib.axes.Axes.set_title

    def set_title(ax, title, *args, **kwargs):
        titles.append(title)
        return real(ax, title, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", set_title)
    assert figures.loss_plot(result([12.5], [[12.5, 11.0, 10.0]]), tmp_path / "one.png")
    assert titles == ["1 restart (initial loss 12.5)"]
    assert figures.loss_plot(result([12.5, 14.0], [[12.5, 11.0, 10.0], [14.0, 13.0, 12.0]]), tmp_path / "two.png")
    assert titles[1:] == ["2 trained restart(s) of 2", "initial losses"]
    assert Image.open(tmp_path / "one.png").size == (742, 360) and Image.open(tmp_path / "two.png").size == (990, 360)


def test_a_figure_that_cannot_be_drawn_is_one_warning(tmp_path, capsys):
    class Broken:
        name = "broken"

        def figure(self, fig, samples, data):
            raise ValueError("no picture of this")

    drawn = figures.components_plot(Broken(), {"x": np.ones((3, 2))}, np.ones((4, 2)), tmp_path / "plots" / "broken.png")
    assert drawn is False and not (tmp_path / "plots" / "broken.png").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("runner: warning: figure broken.png skipped (ValueError: no picture of this")


def test_a_failing_model_figure_does_not_fail_the_run(tmp_path, capsys, monkeypatch):
    """End to end in-process: the model's figure raises, the run finishes, the figure is not listed
    (drawn in this process: the patched figure is this process's, not the helper's)."""
    import runner
    from runner.models.coin import Coin

    monkeypatch.setattr(figures, "_HELPER", None)
    monkeypatch.setattr(figures, "start_helper", lambda *args, **kwargs: None)
    original = Coin.figure
    Coin.figure = lambda self, fig, samples, data: (_ for _ in ()).throw(RuntimeError("figure bug"))
    try:
        out = runner.run(["model=coin", "guide=manual", "steps=100", "tracking=none"], run_dir=tmp_path / "run", quiet=True)
    finally:
        Coin.figure = original
    assert np.isfinite(out.final_loss)
    assert not (Path(out.run_dir) / "plots" / "coin.png").exists() and (Path(out.run_dir) / "plots" / "loss.png").exists()
    assert "runner: warning: figure coin.png skipped (RuntimeError: figure bug" in capsys.readouterr().err


HELPER = """
import contextlib
import io
import sys
from pathlib import Path

import numpy as np

from runner import figures
from runner.models.coin import Coin

out, kill = Path(sys.argv[1]), sys.argv[2] == "kill"
figures.start_helper()
if kill:  # the helper gone before the figures come (killed, crashed)
    figures._HELPER.proc.kill()
    figures._HELPER.proc.wait()
draws = {"x": np.random.default_rng(0).normal(size=(2, 50))}
said = io.StringIO()  # this process's stderr (a notebook's cell): the helper's warnings are printed here
with contextlib.redirect_stderr(said), figures.elsewhere() as drawn:
    sent = [figures.trace_plot(draws, out / "trace.png"), figures.trace_plot({"x": "not an array"}, out / "bad.png"),
            figures.components_plot(Coin(), {"latent_fairness": np.full(10, 0.6)}, np.array([1.0, 0.0]), out / "coin.png")]
    here_meanwhile = "matplotlib" in sys.modules
listed = [name for name, ok in zip(["trace.png", "bad.png", "coin.png"], sent) if ok]  # as a run lists them
print(here_meanwhile, "matplotlib" in sys.modules, sorted(p.name for p in out.iterdir()), drawn.kept(out, listed))
print(said.getvalue().strip())
"""


def helper_run(tmp_path, how):
    import subprocess
    import sys

    (tmp_path / "helper.py").write_text(HELPER)
    (tmp_path / "out").mkdir()
    proc = subprocess.run([sys.executable, str(tmp_path / "helper.py"), str(tmp_path / "out"), how], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip(), proc.stderr


def test_figures_are_drawn_in_the_helper_process(tmp_path):
    """Inside elsewhere() (a run's outputs) the figures go to the command's helper process: this
    process never imports matplotlib; a figure that fails there is one warning line (the helper's)
    and is dropped from the files; a built-in model's own figure is drawn there too."""
    out, err = helper_run(tmp_path, "keep")
    assert out.splitlines() == ["False False ['coin.png', 'trace.png'] ['trace.png', 'coin.png']",
                                "runner: warning: figure bad.png skipped (AttributeError: 'str' object has no "
                                "attribute 'reshape')"]  # printed by this process: a notebook shows it
    assert "runner: warning" not in err


def test_figures_the_helper_cannot_draw_are_drawn_here(tmp_path):
    """A helper that is gone: every figure is drawn in the command's own process instead, and the
    one that fails is still one warning line and dropped."""
    out, err = helper_run(tmp_path, "kill")
    drawn, said = out.splitlines()
    assert drawn.split(" ", 1)[1] == "True ['coin.png', 'trace.png'] ['trace.png', 'coin.png']", out
    assert said.startswith("runner: warning: figure bad.png skipped (AttributeError")


def test_what_would_import_jax_or_a_users_code_in_the_helper_is_drawn_here(tmp_path):
    """A user's model draws its figure with its own code, and an argument that holds a JAX array
    would make the helper import JAX (~1.5 s): neither is sent."""
    import jax.numpy as jnp

    from runner.models.coin import Coin
    from runner.models.function import FunctionModel

    assert figures._portable((Coin(), {"x": np.ones(2)}, None, Path("a.png")))
    assert not figures._portable((FunctionModel.__new__(FunctionModel), {}, None, Path("a.png")))

    class Mine(Coin):  # a user's subclass, in the user's module
        pass

    assert not figures._portable((Mine(), {}, None, Path("a.png")))
    figures.start_helper()
    pending = []
    figures._PENDING, before = pending, figures._PENDING
    try:
        assert not figures._send("trace_plot", ({"x": jnp.ones((2, 5))}, Path("t.png")), {}, Path("t.png"))
        (tmp_path / "a_file").write_text("")
        there = tmp_path / "a_file" / "t.png"  # its folder cannot be made: skipped there
        assert figures._send("trace_plot", ({"x": np.ones((2, 5))}, there), {}, there)
    finally:
        figures._PENDING = before
    assert len(pending) == 1 and figures._HELPER.answer(pending[0][0], 120) == (False, None)


CHDIR = """
import os
import sys
from pathlib import Path

import numpy as np

from runner import figures

figures.start_helper()
os.chdir(sys.argv[1])  # a notebook's %cd after the helper started
with figures.elsewhere() as drawn:
    figures.trace_plot({"x": np.ones((2, 5))}, Path("plots") / "t.png")  # a relative run directory
print(sorted(str(p.relative_to(sys.argv[1])) for p in Path(sys.argv[1]).rglob("*.png")), drawn.skipped)
"""


def test_a_relative_path_is_drawn_where_the_command_is_now(tmp_path):
    import subprocess
    import sys

    (tmp_path / "chdir.py").write_text(CHDIR)
    (tmp_path / "now").mkdir()
    proc = subprocess.run([sys.executable, str(tmp_path / "chdir.py"), str(tmp_path / "now")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "['plots/t.png'] set()"


def test_answers_are_matched_to_their_requests_in_any_order(tmp_path):
    """A nested wait (one run's files written while another's figures are out) takes its own answer
    and keeps the others for theirs; a helper that is stopped leaves nothing behind."""
    import pickle

    helper = figures.Helper()
    try:
        draws = {"x": np.ones((2, 5))}
        first = helper.send("trace_plot", pickle.dumps(((draws, tmp_path / "a.png"), {})))
        second = helper.send("trace_plot", pickle.dumps((({"x": "no"}, tmp_path / "b.png"), {})))
        assert helper.answer(second, 120) == (False, None)
        assert helper.answer(first, 120) == (True, None)
        assert (tmp_path / "a.png").is_file() and not (tmp_path / "b.png").exists()
    finally:
        helper.stop()
    assert helper.proc.poll() is not None


LOADS = """
import pickle
import sys

pickle.loads(open(sys.argv[1], "rb").read())
print(sorted(m for m in sys.modules if m.startswith("runner")))
"""


def test_the_loss_plot_sends_the_curves_it_draws_and_nothing_that_imports_the_method(tmp_path):
    """What the helper reads for the loss plot: the selected curve first and at most MAX_CURVES
    others, as arrays; reading it imports runner.figures only (a FitResult imported five of the
    method's modules in the helper, ~10 ms before its first figure), never the fit's params."""
    import subprocess
    import sys

    losses = np.arange(400 * 3, dtype=np.float32).reshape(400, 3)
    fit = FitResult(initial_losses=np.zeros(400, np.float32), trained=np.arange(400), losses=losses, grad_norms={},
                    final_losses=losses[:, -1], best=7, params={"big": np.ones(10**5)}, samples={},
                    deterministic=True, steps=np.array([0, 5, 9]))
    view = figures.Losses.of(fit)
    assert view.losses.shape == (1 + figures.MAX_CURVES, 3) and (view.losses[0] == losses[7]).all()
    assert 7 not in view.losses[1:, 0] / 3 and (view.steps == [0, 5, 9]).all()
    assert (view.trained, view.best, view.final_loss, view.initial_loss) == (400, 7, float(losses[7, -1]), 0.0)
    payload = figures._payload((view, tmp_path / "loss.png"), {})
    assert payload is not None and len(payload) < 10_000
    (tmp_path / "payload").write_bytes(payload)
    proc = subprocess.run([sys.executable, "-c", LOADS, str(tmp_path / "payload")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not [m for m in eval(proc.stdout) if m.startswith("runner.inference")], proc.stdout
    assert figures.loss_plot(view, tmp_path / "loss.png") and figures.loss_plot(fit, tmp_path / "same.png")


def test_one_set_of_axes_keeps_matplotlibs_margins_panels_are_laid_out(tmp_path, monkeypatch):
    """A figure of runner's own models with one set of axes is saved as drawn (tight_layout's pass
    cost the coin's figure 75 -> 42 ms); one with panels, and any of a user's model (a legend or a
    title of its own outside the axes), is laid out so that nothing is cut or overlaps."""
    import matplotlib.figure

    from runner.models.coin import Coin

    laid_out = []
    real = matplotlib.figure.Figure.tight_layout
    monkeypatch.setattr(matplotlib.figure.Figure, "tight_layout",
                        lambda fig, *a, **k: (laid_out.append(len(fig.axes)), real(fig, *a, **k))[1])

    class One:
        def figure(self, fig, samples, data):
            fig.subplots().plot(data, label="one")

    class Two:
        def figure(self, fig, samples, data):
            for ax in fig.subplots(1, 2):
                ax.plot(data)
                ax.set_title("a panel")

    assert figures.components_plot(Coin(), {"latent_fairness": np.full(10, 0.6)}, np.array([1.0, 0.0]),
                                   tmp_path / "coin.png")
    assert laid_out == []
    assert figures.components_plot(One(), {}, np.arange(3.0), tmp_path / "one.png")
    assert figures.components_plot(Two(), {}, np.arange(3.0), tmp_path / "two.png")
    assert laid_out == [1, 2]
    assert (tmp_path / "one.png").stat().st_size > 1000 and (tmp_path / "two.png").stat().st_size > 1000


def test_the_helper_preloads_runners_modules_named_as_modules_only():
    """The modules the helper imports before its first figure (the model's) are runner's, given as
    dotted names: anything else is left out of its command line."""
    helper = figures.Helper(("runner.models.coin", "os", "runner.x; import os", "runner.models.gmm", "runner.a)"))
    try:
        assert helper.proc.args[-1].endswith(", ('runner.models.coin', 'runner.models.gmm'))")
        assert helper.proc.args[-1].count("os") == 0
    finally:
        helper.stop()


def test_the_helpers_warm_up_draws_in_memory_and_leaves_no_figure_open():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    figures._warm_up()
    assert plt.get_fignums() == before


def test_an_svi_run_sends_its_loss_plot_the_curves_and_a_bad_result_is_one_warning(tmp_path, monkeypatch, capsys):
    import runner

    sent = []
    real = figures.loss_plot
    monkeypatch.setattr(figures, "loss_plot", lambda result, path: (sent.append(type(result)), real(result, path))[1])
    monkeypatch.setattr(figures, "_HELPER", None)
    monkeypatch.setattr(figures, "start_helper", lambda *args, **kwargs: None)
    out = runner.run(["model=coin", "steps=20", "tracking=none"], run_dir=tmp_path / "run", quiet=True)
    assert sent == [figures.Losses] and (Path(out.run_dir) / "plots" / "loss.png").is_file()
    bad = object()
    assert figures.losses_of(bad) is bad
    assert figures.loss_plot(figures.losses_of(bad), tmp_path / "bad.png") is False
    assert "runner: warning: figure bad.png skipped" in capsys.readouterr().err
