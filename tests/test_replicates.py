"""replicates=N: N seeds in one compiled program, the same numbers as N separate runs; the
restart axis sharded over 2 (forced host) devices gives the same numbers as one device."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, read_runs, run_cli

from runner.api import fit_config

pytestmark = pytest.mark.slow
SMALL = ["model=gmm", "guide=autonormal", "steps=30", "restarts=8", "select=final"]


def test_replicates_equal_separate_seeds():
    exp, reps = fit_config([*SMALL, "seed=3", "replicates=3"])
    assert len(reps) == 3
    for i, rep in enumerate(reps):
        _, single = fit_config([*SMALL, f"seed={3 + i}"])
        np.testing.assert_allclose(rep.losses, single.losses, rtol=1e-5, atol=1e-5)
        assert rep.best == single.best
    # different seeds really differ (a stochastic guide)
    assert not np.allclose(reps[0].losses, reps[1].losses)


def test_replicates_logged_as_children(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_cli([*SMALL, "replicates=3", f"tracking.uri={uri}", f"hydra.run.dir={tmp_path}/run"],
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    _, runs = read_runs(uri)
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parent) == 1 and len(children) == 3
    parent = parent[0]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(c.data.params["seed"] for c in children) == ["0", "1", "2"]
    finals = [c.data.metrics["final_loss"] for c in children]
    assert parent.data.metrics["final_loss_mean"] == pytest.approx(np.mean(finals), rel=1e-6)
    assert parent.data.metrics["final_loss_std"] == pytest.approx(np.std(finals), rel=1e-5, abs=1e-7)
    assert parent.data.metrics["replicates"] == 3


SHARD_SCRIPT = """
import json, sys, jax, numpy as np
from runner.api import fit_config
_, r = fit_config(sys.argv[1:])
print(json.dumps({"devices": jax.device_count(), "losses": r.losses.tolist(),
                  "init": r.initial_losses.tolist(), "best": r.best}))
"""


def run_devices(n):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}
    out = subprocess.run([sys.executable, "-c", SHARD_SCRIPT, *SMALL, "jax.cache_dir=null"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_two_devices_same_numbers_as_one():
    one, two = run_devices(1), run_devices(2)
    assert (one["devices"], two["devices"]) == (1, 2)
    np.testing.assert_allclose(two["init"], one["init"], rtol=1e-6)
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5, atol=1e-6)
    assert two["best"] == one["best"]
