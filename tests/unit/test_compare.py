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
    assert rows == [["final_loss", "run_id"], ["1", "y"], ["2", "x"]]  # status: the same for both, left out


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
    assert rows[0] == ["model", "data.path", "seed", "hints.lr", "final_loss", "run_id"]
    assert rows[2][1] == "xxxxxxxxxxx..xxxxxxx.csv" and len(rows[2][1]) == 24  # a file by its name, cut
    everything = table([gmm, gmm2, coin], everything=True)
    assert everything[0] == ["model", "data.path", "hints.lr", "model.K", "seed", "final_loss", "run_id"]
    assert everything[2][1] == LONG
    assert drop_order([gmm, gmm2, coin]) == ["hints.lr", "seed", "data.path"]


def test_key_metrics_by_default_every_metric_with_all():
    a, b = run("a", 2.0), run("b", 1.0, seed="1")
    a["metrics"] = {"final_loss": 2.0, "avg_loglik": -2.0, "posterior/mu/mean": 0.5}
    b["metrics"] = {"final_loss": 1.0, "initial_loss": 9.0}
    assert table([a, b])[0] == ["seed", "final_loss", "run_id"]
    assert table([a, b], everything=True)[0] == [
        "seed", "final_loss", "avg_loglik", "initial_loss", "posterior/mu/mean", "run_id"]
    assert table([a, b], everything=True)[1] == ["1", "1", "", "9", "", "b"]


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


# --- the first ten minutes (issue 29): what the README's steps leave in a store, as runner logs it ---

def svi(run_id, loss, model="gmm", guide="autodelta", seed="0", steps="200", replicates="1", parent=None, **extra):
    """A run as runner's MLflow backend lists it: choices as tags (with the objective an SVI run
    minimises: a Delta guide's is MAP), every param, steps and replicates under two names
    (top level and inference.*), the model's hints beside the optimizer's settings they set."""
    lr, b1 = ("0.0005", "0.9") if model == "coin" else ("0.1", "0.8")
    tags = {"model": model, "guide": guide, "loss": "trace" if model == "coin" else "traceenum",
            "optim": "adam", "inference": "svi", "data": "coin" if model == "coin" else "gmm1d",
            "objective": "map" if guide == "autodelta" else "elbo", "seed": seed}
    params = {"seed": seed, "steps": steps, "inference.steps": steps, "replicates": replicates,
              "inference.replicates": replicates, "restarts": "1" if model == "coin" else "100",
              "optim.lr": lr, "optim.b1": b1, "hints.lr": lr, "guide.variant": "None",
              "tracking.uri": "sqlite:///mlflow.db", "jax_version": "0.10.2",
              "model._target_": f"runner.models.{model}", "guide._target_": f"runner.guides.{guide}"}
    r = {"run_id": run_id * 32, "status": "FINISHED", "name": run_id, "parent_id": parent, "tags": tags,
         "params": params, "final_loss": loss, "metrics": {"final_loss": loss}}
    for k, v in extra.items():
        (r["metrics"] if k.startswith("final_loss_") else r["tags"])[k] = v
    return r


def store():
    """The README's first steps: the tutorial's GMM (MAP), a coin, a sweep of autodelta and
    autonormal over two seeds (50 steps), and `replicates=4` (its 4 children, tag replicate)."""
    runs = [svi("1", 17.4433), svi("2", 14.7899, model="coin", guide="manual", steps="10000"),
            svi("3", 17.4436, steps="50"), svi("4", 17.4436, seed="1", steps="50"),
            svi("5", 17.6937, guide="autonormal", steps="50"), svi("6", 18.5226, guide="autonormal", seed="1", steps="50"),
            svi("7", 17.4436, steps="50", replicates="4", final_loss_std=0.0012, final_loss_mean=17.4436)]
    for i in range(4):
        child = svi("89ab"[i], 17.4436 - i / 1e4, steps="50", replicates="4", parent="7" * 32, replicate=str(i))
        del child["tags"]["objective"]  # a replicate's run says no objective of its own
        runs.append(child)
    return runs


def test_the_choices_come_first_replicates_fold_into_their_run_and_map_is_ranked_apart():
    rows = table(store())
    # the choices that differ (model, guide, then loss and data, which follow from the model), the
    # params that differ (one name each: steps, not inference.steps too; optim.lr, not hints.lr),
    # final_loss and the std over a run's replicates; never status (all FINISHED), never a column
    # that is constant (optim) or blank (guide.variant: None everywhere), never the replicate index
    assert rows[0] == ["model", "guide", "loss", "data", "replicates", "seed", "steps",
                       "optim.b1", "optim.lr", "restarts", "final_loss", "final_loss_std", "run_id"]
    # 7 runs, one row each (the 4 replicates are their run's row, 7777...); ELBOs ranked, then the
    # MAP runs below one line that says why they are apart
    assert [row[-1] if isinstance(row, list) else row for row in rows[1:]] == [
        "22222222", "55555555", "66666666",
        "-- MAP runs, ranked apart: a MAP loss (a negative log joint) is not an ELBO --",
        "11111111", "33333333", "44444444", "77777777"]
    assert rows[8][4:7] == ["4", "0", "50"] and rows[8][-3:] == ["17.4436", "0.0012", "77777777"]
    cells = [row for row in rows[1:] if isinstance(row, list)]
    for i, name in enumerate(rows[0]):  # no blank or constant column
        assert len({row[i] for row in cells}) > 1, name


def test_in_an_80_column_terminal_what_a_person_varied_stays_and_the_model_s_settings_go():
    runs = store()
    rows, dropped = fit(table(runs), 80, drop_order(runs))
    assert rows[0] == ["model", "guide", "loss", "replicates", "seed", "steps", "final_loss", "run_id"]
    assert dropped == ["restarts", "optim.lr", "optim.b1", "final_loss_std", "data"]
    assert max(len(line) for line in render(rows).splitlines()) <= 80
    # three MAP rows of 17.4436 told apart by what differs: replicates, seed
    assert [row[3:5] for row in rows[6:9]] == [["1", "0"], ["1", "1"], ["4", "0"]]


def test_one_objective_no_line_and_runs_without_one_rank_with_the_elbos():
    runs = [r for r in store() if r["tags"].get("objective") != "map" and "replicate" not in r["tags"]]
    em = svi("e", 16.0)
    del em["tags"]["objective"]  # EM and NUTS runs say no objective: ranked with the ELBOs
    rows = table([*runs, em])
    assert not any(isinstance(row, str) for row in rows)
    assert [row[-1] for row in rows[1:]] == ["22222222", "eeeeeeee", "55555555", "66666666"]


def test_all_shows_whole_run_ids_and_every_metric_that_differs_once():
    rows = table(store(), everything=True)
    assert rows[0][-1] == "run_id" and rows[1][-1] == "2" * 32
    assert "final_loss_mean" in rows[0] and "replicate" not in rows[0] and "inference.steps" not in rows[0]
    assert len(rows) == 1 + 7 + 1


def nuts(run_id, model="coin", **tags):
    """A NUTS run as the backend lists it: tagged with the choices its method takes (model, data,
    inference: no guide, loss or optim), but with every param of the composed config, the SVI
    settings it never used (optim.lr, steps) among them."""
    r = svi(run_id, None, model=model)
    for choice in ("guide", "loss", "optim", "objective"):
        del r["tags"][choice]
    r["tags"].update(inference="nuts", **tags)
    r["params"] = {k: v for k, v in r["params"].items() if not k.startswith("inference.")}
    r["params"].update({"inference.samples": "1000", "inference.chains": "4", "progress": "false"})
    return r


def test_a_nuts_run_shows_no_setting_its_method_does_not_take():
    runs = [svi("1", 14.79, model="coin", guide="autonormal", steps="500"),
            svi("2", 14.80, model="coin", guide="autonormal", steps="500", seed="1"), nuts("3")]
    runs[0]["params"]["optim.lr"] = "0.01"  # what a person overrode in one SVI run
    rows = table(runs, everything=True)
    head = rows[0]
    nuts_row = next(row for row in rows[1:] if row[-1] == "3" * 32)
    # no column for steps AND inference.steps (one name each); the NUTS row blank for what it never used
    assert "inference.steps" not in head and "progress" not in head
    for name in ("steps", "optim.lr", "replicates", "guide", "optim"):
        assert nuts_row[head.index(name)] == "", name
    assert nuts_row[head.index("inference.samples")] == "1000"
    assert next(row for row in rows[1:] if row[-1] == "1" * 32)[head.index("optim.lr")] == "0.01"


def test_a_check_run_s_settings_follow_from_its_check_choice():
    sbc = svi("2", 14.8, model="coin", guide="autonormal", check="sbc")
    sbc["params"].update({"check.simulations": "100", "check.draws": "100", "timing": "true"})
    rows = table([svi("1", 14.79, model="coin", guide="autonormal", seed="1"), sbc])
    assert rows[0] == ["check", "seed", "final_loss", "run_id"]  # a choice first; check.*: follow from it
    assert rows[1:] == [["", "1", "14.79", "1" * 8], ["sbc", "0", "14.8", "2" * 8]]
