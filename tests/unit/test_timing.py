"""runner.timing: a phase counts its own time once (less what is nested inside it), a span from a
mark counts none of the phases inside it, and the line lists the phases in the order a run meets them."""
import time

import pytest

from runner import timing


@pytest.fixture(autouse=True)
def fresh():
    timing.reset()
    yield
    timing.reset()


def test_nested_phases_are_counted_once():
    with timing.phase("fit"):
        time.sleep(0.05)
        with timing.phase("compile"):
            time.sleep(0.1)
    spent = timing.spent()
    assert spent["compile"] == pytest.approx(0.1, abs=0.03)
    assert spent["fit"] == pytest.approx(0.05, abs=0.03)  # its compile is not in it


def test_a_span_from_a_mark_leaves_out_the_phases_inside_it():
    """A fused sweep's launcher builds and fits before its first job starts: compose is the rest."""
    timing.mark("compose")
    time.sleep(0.05)
    with timing.phase("fit"):
        time.sleep(0.1)
    timing.since("compose", "compose")
    spent = timing.spent()
    assert spent["compose"] == pytest.approx(0.05, abs=0.03) and spent["fit"] == pytest.approx(0.1, abs=0.03)
    timing.since("compose", "compose")  # a mark is used once: a second job's start adds nothing
    assert timing.spent()["compose"] == spent["compose"]


def test_the_line_lists_the_phases_in_order_and_the_total():
    for name in ("outputs", "build", "fit"):
        with timing.phase(name):
            pass
    timing.job_started()
    timing.job_started()
    line = timing.line(total=2.0)
    assert line.startswith("runner: timing (2 jobs): build 0.00 s, fit 0.00 s, outputs 0.00 s, total 2.00 s")
