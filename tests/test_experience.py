"""Issue 7 (part): readable run names, machine tags, the data set as an MLflow input, the
end-of-run summary table."""
import subprocess

import numpy as np
import pytest
from conftest import ROOT, read_runs, run_cli

from runner.data import coin_flips

pytestmark = pytest.mark.slow


def test_run_name_tags_dataset_and_summary(tmp_path):
    import mlflow.data

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_cli(["model=coin", "guide=manual", "steps=30", "optim.lr=0.01", "seed=3", f"tracking.uri={uri}",
                    f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (run,) = read_runs(uri)[1]
    assert run.info.run_name == "coin-manual-steps30-lr0.01-seed3"
    tags = run.data.tags
    assert tags["jax.backend"] == "cpu" and tags["jax.device_count"] == "1" and tags["jax.device_kind"]
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert tags["mlflow.source.git.commit"] == head.stdout.strip()
    (inp,) = run.inputs.dataset_inputs
    with pytest.warns(UserWarning):  # MLflow's note on a string source; the runner silences it
        expected = mlflow.data.from_numpy(coin_flips(12, 8), source="runner.data.coin_flips", name="coin")
    assert "Warning" not in proc.stderr
    assert (inp.dataset.name, inp.dataset.digest) == ("coin", expected.digest)
    assert "runner.data.coin_flips" in inp.dataset.source
    lines = proc.stdout.strip().splitlines()
    table = dict(line.split(None, 1) for line in lines[-6:])
    assert table["run"] == f"coin-manual-steps30-lr0.01-seed3  ({run.info.run_id})"
    assert float(table["final_loss"]) == pytest.approx(run.data.metrics["final_loss"], rel=1e-5)
    assert table["look"] == f"mlflow ui --backend-store-uri {uri}"
