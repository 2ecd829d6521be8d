"""`make gallery` (python -m runner.gallery): real runs, their plots copied; an unknown figure is one line."""
import subprocess

from conftest import ROOT


def test_gallery_figure_from_a_real_run(tmp_path):
    """`make gallery` runs the listed commands and copies their plots (one figure here)."""
    import sys

    out = subprocess.run([sys.executable, "-m", "runner.gallery", str(tmp_path / "g"), "coin_posterior.png"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    png = (tmp_path / "g" / "coin_posterior.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < len(png) < 200_000  # a real, small figure
    committed = ROOT / "docs" / "gallery"
    from runner.gallery import GALLERY

    assert sorted(p.name for p in committed.glob("*.png")) == sorted(GALLERY)
    bad = subprocess.run([sys.executable, "-m", "runner.gallery", str(tmp_path / "g"), "nope.png"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "nope.png" in bad.stderr
