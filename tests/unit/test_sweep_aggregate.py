"""runner/sweep.py's aggregate: per configuration across seeds, from plain child records."""
import json

import numpy as np
import pytest

from runner.sweep import aggregate, local_children


def test_aggregate_groups_by_config_across_seeds():
    children = [
        {"run_id": "a", "status": "FINISHED", "config_group": "optim.lr=0.1", "final_loss": 1.0},
        {"run_id": "b", "status": "FINISHED", "config_group": "optim.lr=0.1", "final_loss": 3.0},
        {"run_id": "c", "status": "FINISHED", "config_group": "optim.lr=0.05", "final_loss": 2.0},
        {"run_id": "d", "status": "FAILED", "config_group": "optim.lr=0.05", "final_loss": None},
    ]
    scalars, table = aggregate(children, {"run": 3, "skipped": 0, "failed": 1})
    assert scalars["final_loss_mean/optim.lr-0.1"] == 2.0  # '=' is not allowed in a metric name
    assert scalars["final_loss_std/optim.lr-0.1"] == pytest.approx(np.std([1.0, 3.0]))
    assert scalars["final_loss_min/optim.lr-0.1"] == 1.0 and scalars["final_loss_n/optim.lr-0.1"] == 2
    assert scalars["final_loss_n/optim.lr-0.05"] == 1
    assert (scalars["jobs_run"], scalars["jobs_failed"], scalars["children_finished"]) == (3.0, 1.0, 3.0)
    assert [row["config"] for row in table] == ["optim.lr=0.05", "optim.lr=0.1"]
    assert table[1]["run_ids"] == ["a", "b"]


def test_local_children_read_the_jobs_run_directories(tmp_path):
    for job, (status, loss) in enumerate([("run", 4.0), ("failed", None), ("skipped", None)]):
        d = tmp_path / str(job)
        d.mkdir()
        (d / "runner_status.json").write_text(json.dumps({"status": status, "config_group": "seed-less",
                                                          "final_loss": loss}))
        (d / "metrics.json").write_text(json.dumps({"scalars": {}, "curves": {"loss": [5.0, 4.0]}}))
    rows = local_children(tmp_path)
    assert [(r["run_id"], r["status"]) for r in rows] == [("0", "FINISHED"), ("1", "FAILED")]
    assert rows[0]["loss"] == [5.0, 4.0] and rows[0]["final_loss"] == 4.0
