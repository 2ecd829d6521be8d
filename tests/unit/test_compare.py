"""runner/compare.py on plain run records: the table's columns are the choices and params that
differ between the runs (never where they are logged, the jax settings or a `_target_`; by
default not a param that only some runs have, and long values cut), rows best final loss first (a
missing or NaN loss last), the rendered text is aligned columns that fit the terminal, and a
sqlite path that is no MLflow store is refused without creating one. (The command against a
real sweep: tests/e2e/test_sweep.py.)"""
import pytest
from conftest import free_port

from runner.compare import drop_order, fit, render, table


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


LONG = "/data/" + "x" * 90 + ".csv"


def test_by_default_params_a_person_varied_then_shared_ones_never_one_that_follows_from_a_choice():
    gmm = run("g", 17.4, **{"model.K": "2", "data.path": LONG, "hints.lr": "0.1"})
    gmm2 = run("h", 17.5, seed="1", **{"model.K": "2", "data.path": "/data/short.csv", "hints.lr": "0.1"})
    coin = run("k", 14.8, **{"hints.lr": "0.0005"})
    coin["tags"]["model"] = "coin"
    rows = table([gmm, gmm2, coin])
    # data.path and seed differ between runs of the same choices (gmm's two); hints.lr, which every
    # run has, follows the model; model.K (gmm's alone) is left out
    assert rows[0] == ["model", "data.path", "seed", "hints.lr", "final_loss", "status", "run_id"]
    assert rows[2][1] == "xxxxxxxxxxx..xxxxxxx.csv" and len(rows[2][1]) == 24  # a file by its name, cut
    everything = table([gmm, gmm2, coin], everything=True)
    assert everything[0] == ["model", "data.path", "hints.lr", "model.K", "seed", "final_loss", "status", "run_id"]
    assert everything[2][1] == LONG
    assert drop_order([gmm, gmm2, coin]) == ["hints.lr", "seed", "data.path"]


def test_key_metrics_by_default_every_metric_with_all():
    a, b = run("a", 2.0), run("b", 1.0, seed="1")
    a["metrics"] = {"final_loss": 2.0, "avg_loglik": -2.0, "posterior/mu/mean": 0.5}
    b["metrics"] = {"final_loss": 1.0, "initial_loss": 9.0}
    assert table([a, b])[0] == ["seed", "final_loss", "status", "run_id"]
    assert table([a, b], everything=True)[0] == [
        "seed", "final_loss", "avg_loglik", "initial_loss", "posterior/mu/mean", "status", "run_id"]
    assert table([a, b], everything=True)[1] == ["1", "1", "", "9", "", "FINISHED", "b"]


def test_fit_leaves_out_columns_in_order_until_the_table_fits():
    rows = [["guide", "optim.lr", "seed", "final_loss", "status", "run_id"],
            ["autonormal", "0.01", "0", "17.4433", "FINISHED", "c" * 32]]
    assert len(render(rows).splitlines()[1]) == 82
    assert fit(rows, 82, ["seed", "optim.lr"]) == (rows, [])
    fitted, dropped = fit(rows, 80, ["seed", "optim.lr"])
    assert fitted[0] == ["guide", "optim.lr", "final_loss", "status", "run_id"] and dropped == ["seed"]
    fitted, dropped = fit(rows, 70, ["seed", "optim.lr"])
    assert fitted[0] == ["guide", "final_loss", "status", "run_id"] and dropped == ["seed", "optim.lr"]
    assert max(len(line) for line in render(fitted).splitlines()) <= 70
    assert fit(rows, 10, ["seed"])[0][0] == ["guide", "optim.lr", "final_loss", "status", "run_id"]  # no more to drop


def test_a_missing_or_foreign_sqlite_file_is_refused_and_not_created(tmp_path):
    import sqlite3

    from runner.tracking import TrackingError, reader

    def refusal(uri):
        with pytest.raises(TrackingError) as e:
            reader(uri=uri)
        return str(e.value)

    missing = tmp_path / "mlfow.db"
    assert refusal(f"sqlite:///{missing}").startswith(f"no MLflow store at {missing} (no such file)")
    assert not missing.exists()
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("create table t (x)").connection.commit()
    assert refusal(f"sqlite:///{other}") == f"{other} is not an MLflow store (it has no experiments table)"
    (tmp_path / "text.db").write_text("not a database at all, not even close to one")
    assert refusal(f"sqlite:///{tmp_path}/text.db").startswith(f"{tmp_path}/text.db is not an MLflow store (")
    assert "unreachable" in refusal(f"http://127.0.0.1:{free_port()}")  # a server: reached within the deadline
