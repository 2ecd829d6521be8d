"""runner/sweep.py's aggregate: per configuration across seeds, from plain child records; each
config hash counted once; per-configuration numbers never become metric names; the parent's
description and name say what the sweep varied."""
import json

import numpy as np
import pytest

from runner.sweep import aggregate, description, local_children, parent_name, table_frame, unique_children


def child(run_id, group, loss, seed, status="FINISHED", chash=None, start=0):
    return {"run_id": run_id, "status": status, "config_group": group, "final_loss": loss, "seed": str(seed),
            "config_hash": chash or f"{group}/{seed}", "start_time": start}


# per configuration: lr=0.1 has mean 2 (1, 3), lr=0.05 has mean 5 (one finished seed), and all three
# finished children have mean 3: a row computed over every configuration, or over the failed child
# too, gives other numbers than each row's own
CHILDREN = [
    child("a", "optim.lr=0.1", 1.0, 0), child("b", "optim.lr=0.1", 3.0, 1),
    child("c", "optim.lr=0.05", 5.0, 0), child("d", "optim.lr=0.05", None, 1, status="FAILED"),
]


def test_aggregate_groups_by_config_across_seeds_into_a_table_not_metric_names():
    metrics, tags, table = aggregate(CHILDREN, {"run": 3, "skipped": 0, "failed": 1})
    assert metrics == {"final_loss": 1.0}  # the best child's, under the children's own metric name
    assert tags == {"jobs_run": 3, "jobs_skipped": 0, "jobs_failed": 1, "children_finished": 3, "configs": 2,
                    "best_run_id": "a", "best_config": "optim.lr=0.1"}
    assert [row["config"] for row in table] == ["optim.lr=0.05", "optim.lr=0.1"]
    lr01 = table[1]
    assert (lr01["n"], lr01["seeds"], lr01["mean"], lr01["min"], lr01["max"], lr01["best_run_id"]) == (
        2, "0 1", 2.0, 1.0, 3.0, "a")
    assert lr01["std"] == pytest.approx(np.std([1.0, 3.0])) and lr01["run_ids"] == ["a", "b"]
    lr005 = table[0]  # the failed seed is not counted
    assert (lr005["n"], lr005["seeds"], lr005["mean"], lr005["std"], lr005["min"], lr005["max"], lr005["best_run_id"],
            lr005["run_ids"]) == (1, "0", 5.0, 0.0, 5.0, 5.0, "c", ["c"])
    frame = table_frame(table)  # MLflow's table artifact: column -> values, no list cells
    assert list(frame) == ["config", "n", "seeds", "mean", "std", "min", "max", "best_run_id"]
    assert frame["n"] == [1, 2] and frame["best_run_id"] == ["c", "a"]
    assert frame["std"] == [0.0, 1.0] and table_frame([{**lr01, "mean": 17.443256378}])["mean"] == [17.4433]


def test_a_config_and_seed_run_twice_counts_once():
    # the same sweep started twice at once: seed 1 of lr=0.1 finished in both processes
    twice = [*CHILDREN, child("b2", "optim.lr=0.1", 3.0, 1, chash="optim.lr=0.1/1", start=5)]
    _, tags, table = aggregate(twice, {"run": 4, "skipped": 0, "failed": 1})
    assert table[1]["n"] == 2 and table[1]["run_ids"] == ["a", "b"] and tags["children_finished"] == 3
    assert [c["run_id"] for c in unique_children(twice)] == ["a", "b", "c"]  # the earliest of the twins


def test_no_finished_child_gives_no_metric_and_no_best():
    metrics, tags, table = aggregate([CHILDREN[3]], {"run": 0, "skipped": 0, "failed": 1})
    assert metrics == {} and table == [] and "best_run_id" not in tags and tags["children_finished"] == 0


def test_the_parents_description_and_name_say_what_varied():
    overrides = ["model=gmm", "guide=autodelta,autonormal", "optim.lr=0.05,0.1", "seed=0,1"]
    text = description(overrides, 8, {"final_loss": 17.44331, "best_run_id": "r1", "best_config": "guide=autodelta"})
    assert text.splitlines()[0] == ("Sweep of 8 jobs over guide (autodelta, autonormal) x optim.lr (0.05, 0.1) x "
                                    "seed (0, 1); fixed: model=gmm.")
    assert "Group by -> tag config_group" in text
    assert text.splitlines()[-1] == "Best final_loss 17.4433: run r1 (guide=autodelta)."
    path = "/data/" + "x" * 90 + ".csv"
    assert parent_name(["model=gmm", f"data.path={path}", "seed=0,1"]) == (
        "sweep model=gmm data.path=xxxxxxxxxxxxxxx..xxxxxxxxxxx.csv seed=0,1")


def test_local_children_read_the_jobs_run_directories(tmp_path):
    for job, (status, loss) in enumerate([("run", 4.0), ("failed", None), ("skipped", None)]):
        d = tmp_path / str(job)
        d.mkdir()
        (d / "runner_status.json").write_text(json.dumps({"status": status, "config_group": "seed-less",
                                                          "final_loss": loss, "config_hash": f"h{job}", "seed": job}))
        (d / "metrics.json").write_text(json.dumps({"scalars": {}, "curves": {"loss": [5.0, 4.0]}}))
    rows = local_children(tmp_path)
    assert [(r["run_id"], r["status"], r["config_hash"], r["seed"]) for r in rows] == [
        ("0", "FINISHED", "h0", 0), ("1", "FAILED", "h1", 1)]
    assert rows[0]["loss"] == [5.0, 4.0] and rows[0]["final_loss"] == 4.0


def test_a_map_objective_is_not_ranked_with_elbos():
    """The README's my_project sweep crowned guide=autolaplace (55.56, the MAP objective of its fit)
    over the autonormal and autolowrank ELBOs: each objective is ranked apart, the ELBO first."""
    runs = [dict(child("n0", "guide=autonormal", 60.1, 0), objective="elbo"),
            dict(child("l0", "guide=autolowrank", 59.7, 0), objective="elbo"),
            dict(child("p0", "guide=autolaplace", 55.56, 0), objective="map"),
            dict(child("p1", "guide=autolaplace", 55.9, 1), objective="map")]
    metrics, tags, _ = aggregate(runs, {"run": 4, "skipped": 0, "failed": 0})
    assert metrics == {"final_loss": 59.7}
    assert (tags["best_run_id"], tags["best_config"], tags["ranked_objective"]) == ("l0", "guide=autolowrank", "elbo")
    assert (tags["apart_objective"], tags["apart_runs"], tags["apart_best_final_loss"], tags["apart_best_run_id"]) == (
        "map", 2, 55.56, "p0")
    # one objective (or runs that do not say theirs, EM's): ranked together as before
    metrics, tags, _ = aggregate([dict(r, objective="map") for r in runs], {"run": 4, "skipped": 0, "failed": 0})
    assert metrics == {"final_loss": 55.56} and "apart_runs" not in tags
    metrics, tags, _ = aggregate([*runs[:2], child("e", "inference=em", 10.0, 0)], {"run": 3, "skipped": 0, "failed": 0})
    assert metrics == {"final_loss": 10.0} and "apart_runs" not in tags
    assert "mixed_objectives" not in tags  # a sweep ranks them apart: nothing was compared across objectives


def test_a_search_that_mixed_objectives_says_so(tmp_path, capsys):
    """An Optuna search over guide=choice(autodelta, autonormal) tells its sampler the MAP loss and the
    ELBO as one value; its best (the study's) stays, labelled with its objective, and a warning says
    that the two were compared."""
    from runner.sweep import said

    runs = [dict(child("n0", "guide=autonormal", 14.2, 0), objective="elbo"),
            dict(child("d0", "guide=autodelta", 13.46, 0), objective="map"),
            dict(child("d1", "guide=autodelta", 13.5, 1), objective="map")]
    metrics, tags, table = aggregate(runs, {"run": 3, "skipped": 0, "failed": 0}, by_objective=False)
    assert metrics == {"final_loss": 13.46} and "apart_runs" not in tags
    assert (tags["mixed_objectives"], tags["best_objective"], tags["best_run_id"]) == ("elbo 1, map 2", "map", "d0")
    said({"children": 3, "groups": table, **metrics, **tags}, [{"status": "run"}] * 3,
         {"run": 3, "skipped": 0, "failed": 0}, "p", tmp_path)
    out, err = capsys.readouterr()
    assert "runner: sweep best final_loss=13.46 (MAP) guide=autodelta (run d0)" in out
    assert "runner: warning: the search's trials minimise different objectives (runs per objective: elbo 1, map 2): " in err
    # a search of one objective: no warning, no label
    metrics, tags, table = aggregate(runs[1:], {"run": 2, "skipped": 0, "failed": 0}, by_objective=False)
    assert "mixed_objectives" not in tags and "best_objective" not in tags
    said({"children": 2, "groups": table, **metrics, **tags}, [{"status": "run"}] * 2,
         {"run": 2, "skipped": 0, "failed": 0}, "p", tmp_path)
    out, err = capsys.readouterr()
    assert "runner: sweep best final_loss=13.46 guide=autodelta (run d0)" in out and "warning" not in err


def test_a_finished_run_without_a_final_loss_counts_but_is_not_ranked():
    # a sweep over inference=svi,nuts: the NUTS child is FINISHED with no final loss (it samples);
    # it counts among the finished children (the summary line said "1 finished child runs" for 2)
    # and stays out of the final-loss table; the NUTS config run twice counts once
    nuts = child("n", "inference=nuts", None, 0)
    twin = child("n2", "inference=nuts", None, 0, start=5)
    metrics, tags, table = aggregate([*CHILDREN, nuts, twin], {"run": 5, "skipped": 0, "failed": 1})
    assert tags["children_finished"] == 4 and tags["configs"] == 2
    assert [r["config"] for r in table] == ["optim.lr=0.05", "optim.lr=0.1"] and metrics["final_loss"] == 1.0
    assert [c["run_id"] for c in unique_children([nuts, twin], scored=False)] == ["n"]
    assert unique_children([nuts, twin]) == []
