"""The sqlite store's write check before any fit (runner.tracking.mlflow.reach.writable): tried, not
asked. os.access says yes to root for every folder (/sys, a read-only mount), so a store that could not
be written passed the check and the run failed after its fit with exit 1."""
import os

import pytest

from runner.errors import TrackingError
from runner.tracking.mlflow.reach import check_reachable, writable


def test_a_writable_folder_passes_and_keeps_no_probe(tmp_path):
    (tmp_path / "mlflow.db").write_bytes(b"")
    writable(tmp_path / "mlflow.db")
    assert sorted(os.listdir(tmp_path)) == ["mlflow.db"]
    assert (tmp_path / "mlflow.db").read_bytes() == b""  # opened for writing, nothing written


def test_a_lock_file_that_cannot_be_opened_is_refused_before_the_fit(tmp_path):
    (tmp_path / "mlflow.db.lock").mkdir()  # the store's lock (FileLock) cannot be opened: for root too
    with pytest.raises(IsADirectoryError):
        writable(tmp_path / "mlflow.db")
    with pytest.raises(TrackingError, match=r"is not writable \(Is a directory\): set tracking.uri"):
        check_reachable(f"sqlite:///{tmp_path}/mlflow.db")


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="sysfs (Linux): a folder that takes no new file, for root too")
def test_a_folder_that_takes_no_new_file_is_refused():
    with pytest.raises(TrackingError, match=r"^the tracking store sqlite:////sys/mlflow.db is not writable \("):
        check_reachable("sqlite:////sys/mlflow.db")
