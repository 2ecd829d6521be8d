"""Hydra's options anywhere on the command line (runner.__main__.options_first): Hydra's parser took
an option after the overrides only at the very end, so `-m hydra/launcher=vectorized --config-dir conf
model=lin ...` (the order a user types when adding the option last-but-one) was Hydra's usage text
and "unrecognized arguments", exit 2."""
import subprocess
import sys

import pytest

from runner.__main__ import options_first


@pytest.mark.parametrize("argv, expected", [
    (["-m", "model=coin", "--config-dir", "conf", "steps=10"], ["-m", "--config-dir", "conf", "model=coin", "steps=10"]),
    (["model=coin", "--cfg", "job", "+x=1", "~y"], ["--cfg", "job", "model=coin", "+x=1", "~y"]),
    (["a=1", "--config-dir=conf", "b=2", "-cn", "other"], ["--config-dir=conf", "-cn", "other", "a=1", "b=2"]),
    (["a=1", "--info", "defaults", "b=2"], ["--info", "defaults", "a=1", "b=2"]),
    (["a=1", "--info", "b=2"], ["--info", "a=1", "b=2"]),  # --info without a value takes no override
    (["model=coin", "steps=10"], ["model=coin", "steps=10"]),
    (["a=-1", "b=--x"], ["a=-1", "b=--x"]),  # a value that starts with "-" stays in its override
])
def test_options_go_ahead_of_the_overrides_in_their_order(argv, expected):
    assert options_first(argv) == expected


def test_an_option_between_overrides_through_the_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "runner", "model=coin", "--cfg", "job", "steps=7"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "steps: 7" in proc.stdout.splitlines()
