"""runner.background: a module is never imported by two threads at once. The figures and the
files wait for the import a sweep starts while its store opens (runner.outputs.load)."""
import threading
import time

from runner import background


def test_settled_waits_for_a_background_import_and_not_for_itself():
    done, seen_inside = threading.Event(), []

    def load():
        background.settled()  # inside the thread: returns at once (no self-join)
        seen_inside.append(True)
        time.sleep(0.3)
        done.set()

    background.start("test-import", load)
    background.settled()
    assert done.is_set() and seen_inside == [True]
    assert background._THREADS == []


def test_figures_after_the_outputs_import_thread(tmp_path):
    """The race issue 27 saw: figures importing pyplot while a background thread imports it."""
    import numpy as np

    from runner import figures

    background.start("test-pyplot-import", figures.load)
    assert figures.trace_plot({"x": np.random.default_rng(0).normal(size=(2, 50))}, tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 0
