"""A disk that fills up: one line, exit 1, the run FAILED (not RUNNING, not a traceback), and the
store intact. Real small tmpfs mounts (needs root, as on the CI machine; skipped elsewhere)."""
import sqlite3
import subprocess

import pytest
from conftest import needs, read_runs, run_cli


@pytest.fixture
def small_disk(tmp_path):
    """mount(size) -> a folder on its own tmpfs of that size, unmounted afterwards."""
    mounted = []

    def mount(size: str):
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            needs(f"cannot mount a tmpfs here (root can): {proc.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)  # lazy: a test client may hold the sqlite file


def fill(folder):
    try:
        with open(folder / "fill", "wb", buffering=0) as f:
            while True:
                f.write(b"\0" * 4096)
    except OSError:
        pass


def test_outputs_on_a_full_disk(tmp_path, small_disk):
    disk = small_disk("60k")  # room for the config, not for the figures
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_cli(["model=gmm", "steps=20", f"tracking.uri={uri}", f"hydra.run.dir={disk}/run"], cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    (run,) = read_runs(uri)[1]
    assert proc.stderr.strip().splitlines() == [
        f"runner: error: cannot write {disk}/run: No space left on device; run {run.info.run_id} is FAILED"]
    assert run.info.status == "FAILED" and "No space left on device" in run.data.tags["error"]


def test_a_store_on_a_full_disk_stays_intact(tmp_path, small_disk):
    disk = small_disk("3m")
    uri = f"sqlite:///{disk}/mlflow.db"
    first = run_cli(["model=coin", "steps=20", f"tracking.uri={uri}", f"hydra.run.dir={tmp_path}/run1"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    fill(disk)
    proc = run_cli(["model=coin", "steps=20", f"tracking.uri={uri}", f"hydra.run.dir={tmp_path}/run2"], cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"runner: error: tracking failed (MlflowException: database or disk is full); the fit is saved in {tmp_path}/run2"]
    (disk / "fill").unlink()
    assert sqlite3.connect(disk / "mlflow.db").execute("pragma integrity_check").fetchall() == [("ok",)]
    runs = read_runs(uri)[1]
    assert [r.info.status for r in runs] == ["FINISHED"] and "final_loss" in runs[0].data.metrics
    assert (tmp_path / "run2" / "metrics.json").is_file()
