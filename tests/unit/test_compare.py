"""runner/compare.py on plain run records: the table's columns are the choices and params that
differ between the runs (never where they are logged, the jax settings or a `_target_`), rows best
final loss first (a missing or NaN loss last), and the rendered text is aligned columns. (The
command against a real sweep: tests/e2e/test_sweep.py.)"""
from runner.compare import render, table


def run(run_id, loss, status="FINISHED", **params):
    tags = {"model": "gmm", "guide": params.pop("guide", "autodelta"), "loss": "traceenum", "optim": "adam"}
    base = {"steps": "200", "seed": "0", "optim.lr": "0.1", "tracking.uri": f"sqlite:///{run_id}.db",
            "jax.cache_dir": f"/tmp/{run_id}", "jax_version": "0.10.2", "key_derivation": "...",
            "model._target_": "runner.models.gmm.GMM", "guide._target_": f"runner.guides.auto.{tags['guide']}",
            "guide._partial_": "True", "guide": tags["guide"], "hydra.run.dir": run_id}
    return {"run_id": run_id, "tags": tags, "params": {**base, **params}, "final_loss": loss, "status": status}


RUNS = [run("a", 17.5, seed="0"), run("b", float("nan"), status="FAILED", seed="1"),
        run("c", 17.4433, guide="autonormal", seed="0", **{"optim.lr": "0.01"}), run("d", None, status="RUNNING", seed="1"),
        run("e", 120.123456789, guide="autonormal", seed="1")]


def test_varying_columns_only_best_final_loss_first():
    rows = table(RUNS)
    assert rows == [
        ["guide", "optim.lr", "seed", "final_loss", "status", "run_id"],
        ["autonormal", "0.01", "0", "17.4433", "FINISHED", "c"],
        ["autodelta", "0.1", "0", "17.5", "FINISHED", "a"],
        ["autonormal", "0.1", "1", "120.123", "FINISHED", "e"],
        ["autodelta", "0.1", "1", "nan", "FAILED", "b"],  # NaN and missing losses sort last, in order
        ["autodelta", "0.1", "1", "", "RUNNING", "d"],
    ]


def test_runs_that_agree_on_everything_have_no_parameter_columns():
    rows = table([run("x", 2.0), run("y", 1.0)])
    assert rows == [["final_loss", "status", "run_id"], ["1", "FINISHED", "y"], ["2", "FINISHED", "x"]]


def test_render_aligns_the_columns():
    text = render([["guide", "final_loss", "run_id"], ["autonormal", "17.4433", "c"], ["autodelta", "", "abc"]])
    assert text.splitlines() == ["guide       final_loss  run_id",
                                 "autonormal  17.4433     c",
                                 "autodelta               abc"]
