"""A run id as runner.compare shows it (its first 8 characters) is taken by the side commands that
read a run: `python -m runner.compare --sweep <id>` and `python -m runner.predict run_id=<id>` (both
said "no such run" for the id compare had just printed). The first characters name the one run
whose id starts with them; none, or several, is one line and exit 2."""
import json
import sqlite3
import subprocess
import sys

import pytest
from conftest import read_runs, run_cli

from runner.tracking.mlflow.store import whole_run_id


def side(module, args, cwd):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_compare_and_predict_take_a_run_ids_first_characters(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_cli(["-m", "model=gmm", "steps=20", "seed=0,1", f"tracking.uri={uri}",
                    f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, runs = read_runs(uri)
    parent = next(r for r in runs if r.data.tags.get("runner.role") == "sweep").info.run_id
    child = next(r for r in runs if r.data.tags.get("runner.role") != "sweep").info.run_id
    whole = side("runner.compare", ["--sweep", parent], tmp_path)
    short = side("runner.compare", ["--sweep", parent[:8]], tmp_path)
    assert (whole.returncode, short.returncode) == (0, 0), short.stderr
    assert short.stdout == whole.stdout and child[:8] in short.stdout and len(short.stdout.splitlines()) == 3
    proc = side("runner.predict", [f"run_id={child[:8]}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    predicted = json.loads((tmp_path / "predictions.json").read_text())
    assert predicted["run_id"] == child  # recorded whole: a start may name two runs later
    # the tutorial's MAP assignments of [0, 1, 10, 11, 12], up to the components' labels
    assert predicted["assignment"] in ([1, 1, 0, 0, 0], [0, 0, 1, 1, 1])
    unknown = "0123abcd" if not any(r.info.run_id.startswith("0123abcd") for r in runs) else "fedc4321"
    for module, args in (("runner.compare", ["--sweep", unknown]), ("runner.predict", [f"run_id={unknown}"])):
        proc = side(module, args, tmp_path)
        assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
            f"{module}: error: no run whose id starts with {unknown} in sqlite:///mlflow.db"], proc.stderr


def test_first_characters_that_two_runs_share_are_refused(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("runner")
    ids = [client.create_run(exp).info.run_id for _ in range(3)]
    wanted = ["abcd" + "0" * 28, "abcd" + "1" * 28]
    with sqlite3.connect(tmp_path / "mlflow.db") as db:  # two runs whose ids share their first 4 characters
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
                  if "run_uuid" in {c[1] for c in db.execute(f"PRAGMA table_info({t})")}]
        for old, new in zip(ids, wanted):
            for table in tables:
                db.execute(f"UPDATE {table} SET run_uuid=? WHERE run_uuid=?", (new, old))
    with pytest.raises(LookupError, match=f"run id abcd is ambiguous in {uri}: runs abcd0+ and abcd1+ "):
        whole_run_id(client, "abcd", uri)
    assert whole_run_id(client, "abcd1", uri) == wanted[1]
    assert whole_run_id(client, "ABCD1", uri) == wanted[1] and whole_run_id(client, wanted[1].upper(), uri) == wanted[1]
    client.delete_run(wanted[0])  # a deleted run gives way to an active one; alone, it is found
    assert whole_run_id(client, "abcd", uri) == wanted[1]
    assert whole_run_id(client, "abcd0", uri) == wanted[0]
    assert whole_run_id(client, ids[2][:8], uri) == ids[2]
    assert whole_run_id(client, ids[2], uri) == ids[2]
    assert whole_run_id(client, "abc", uri) == "abc"  # too short to be taken for a start: as typed
