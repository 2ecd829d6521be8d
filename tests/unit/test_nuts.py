"""runner/inference/nuts.py in-process: the GMM tutorial's collapsed NUTS (the assignments summed out),
vectorised chains, convergence diagnostics and the posterior summary as metrics, the MAP
assignments. (A user model by NUTS through the CLI: tests/e2e/test_user_project.py.)"""
import json

import numpy as np
import pytest
from conftest import run_recorded, same_partition


def test_collapsed_nuts_on_the_tutorial_gmm(tmp_path):
    record, out = run_recorded(tmp_path / "run", "model=gmm", "inference=nuts", "inference.chains=2")
    run_dir = out.run_dir
    with np.load(run_dir / "posterior.npz", allow_pickle=False) as z:
        locs = z["locs"]
    assert locs.shape == (2 * 250, 2)  # 2 vectorised chains x 250 samples (tutorial's 50 warmup)
    assert np.abs(np.sort(locs, axis=1).mean(0) - [0.5, 11.0]).max() < 1.0
    m = record["scalars"]
    assert {"r_hat/locs", "n_eff/locs", "r_hat/scale", "n_eff/weights", "posterior/scale/mean",
            "posterior/scale/std", "posterior/locs.1/mean"} <= set(m)
    assert 0.9 < m["r_hat/scale"] < 2 and m["n_eff/scale"] > 1
    assert m["posterior/scale/mean"] == pytest.approx(float(np.load(run_dir / "posterior.npz")["scale"].mean()), rel=1e-4)
    assert m["posterior/scale/std"] == pytest.approx(float(np.load(run_dir / "posterior.npz")["scale"].std()), rel=5e-3)
    assert "plots/trace.png" in record["artifacts"] and (run_dir / "plots" / "trace.png").is_file()
    assign = json.loads((run_dir / "assignments.json").read_text())["assignment"]
    assert same_partition(assign, [0, 0, 1, 1, 1])
