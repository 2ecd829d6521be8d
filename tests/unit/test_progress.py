"""runner/progress.py: what the progress line prints at given updates and times (a fake clock), into
a pipe or file (whole lines, at most every `every_s_pipe` s) and on a terminal (one line redrawn),
quiet for short fits, the first chunk (with the compile) never shown. (Its chunks change no number
of the fit: tests/unit/test_svi.py; on a real terminal: tests/e2e/test_cli.py.)"""
import io
import types

import pytest

from runner import progress
from runner.progress import Progress


@pytest.fixture
def clock(monkeypatch):
    """runner.progress's clock, set by the test: clock.now = seconds."""
    fake = types.SimpleNamespace(now=0.0)
    monkeypatch.setattr(progress, "time", types.SimpleNamespace(perf_counter=lambda: fake.now))
    return fake


class Terminal(io.StringIO):
    def isatty(self):
        return True


def feed(shown, clock, updates):
    for t, step, loss in updates:
        clock.now = t
        shown.update(step, loss)


def test_into_a_pipe_whole_lines_at_most_every_ten_seconds(clock):
    out = io.StringIO()
    shown = Progress(1000, stream=out)
    assert (shown.tty, shown.every_s, shown.quiet_s) == (False, 10.0, 1.0)
    feed(shown, clock, [(0.0, 10, 9.0),  # the first chunk: it held the compile, sets the clock's zero
                        (0.5, 20, 8.0),  # under quiet_s (1 s): a fit this short says nothing
                        (2.0, 60, 7.5),  # 50 steps in 2 s: 25 steps/s, 940 left: 38 s
                        (5.0, 130, 7.0),  # within 10 s of the last line
                        (12.0, 310, 6.25)])  # 300 steps in 12 s
    shown.close()  # nothing to end in a pipe
    assert out.getvalue() == ("runner: step 60/1000  last loss 7.5  25 steps/s  left 38s\n"
                              "runner: step 310/1000  last loss 6.25  25 steps/s  left 28s\n")
    assert (shown.updates, shown.printed) == (5, 2)


def test_the_last_step_is_always_shown_once_something_was(clock):
    out = io.StringIO()
    shown = Progress(200, stream=out)
    feed(shown, clock, [(0.0, 50, 3.0), (2.0, 150, 2.0), (3.0, 200, 1.0)])  # done 1 s after a line
    assert out.getvalue().splitlines() == ["runner: step 150/200  last loss 2  50 steps/s  left 1s",
                                           "runner: step 200/200  last loss 1  50 steps/s  left 0s"]


def test_a_short_fit_prints_nothing(clock):
    out = io.StringIO()
    shown = Progress(200, stream=out)
    feed(shown, clock, [(0.0, 50, 3.0), (0.4, 150, 2.0), (0.8, 200, 1.0)])  # done within quiet_s
    shown.close()
    assert out.getvalue() == "" and shown.printed == 0 and shown.updates == 3


def test_on_a_terminal_one_line_redrawn_then_ended(clock):
    term = Terminal()
    shown = Progress(3000, label="job 2/4 ", stream=term)
    assert shown.tty and shown.every_s == 0.25
    feed(shown, clock, [(0.0, 100, 5.0), (1.0, 1100, 4.0), (1.1, 1200, 3.9), (2.0, 2100, 3.5)])
    shown.close()
    assert term.getvalue() == ("\rrunner: job 2/4 step 1100/3000  last loss 4  1,000 steps/s  left 2s\x1b[K"
                               "\rrunner: job 2/4 step 2100/3000  last loss 3.5  1,000 steps/s  left 1s\x1b[K\n")


def test_the_line_itself():
    shown = Progress(10, stream=io.StringIO())
    assert shown.line(5, 0.123456789, 12345.6) == "runner: step 5/10  last loss 0.123457  12,346 steps/s  left 0s"
    assert shown.line(5, 1.0, 0.0).endswith("0 steps/s  left ?")  # no rate yet: no estimate
