"""Predictions from a logged run, as a user gets them: `python -m runner.predict` (assignments for
new data, no refit; an EM run's own assignments back), and the run's MLflow pyfunc model, loaded
with mlflow.pyfunc.load_model and served by `mlflow models serve`. (runner.compare: with a real
sweep, tests/e2e/test_sweep.py.)"""
import json
import subprocess
import sys

import numpy as np
from conftest import fit_cli, free_port, read_runs, run_cli, same_partition, wait_http


def fit(tmp_path, *args):
    return fit_cli(tmp_path, *args)[1:]


def test_predict_from_a_logged_run(tmp_path):
    _, run, _ = fit(tmp_path, "model=gmm")
    new = tmp_path / "new.csv"
    new.write_text("-0.5\n0.7\n10.5\n13\n")
    out = subprocess.run([sys.executable, "-m", "runner.predict", f"run_id={run.info.run_id}",
                          f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", "data=file", f"data.path={new}",
                          f"out={tmp_path}/pred.json"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    pred = json.loads((tmp_path / "pred.json").read_text())
    assert same_partition(pred["assignment"], [0, 0, 1, 1]) and pred["n"] == 4
    probs = np.asarray(pred["assignment_probs"])
    assert probs.shape == (4, 2) and (probs.max(1) > 0.99).all()
    # nothing was refitted: still one run in the store
    assert len(read_runs(f"sqlite:///{tmp_path}/mlflow.db")[1]) == 1
    bad = subprocess.run([sys.executable, "-m", "runner.predict", "run_id=0123",
                          f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("runner.predict: error: no run whose id starts with 0123 in ")


def test_predict_checks_the_width_of_new_data_and_takes_fewer_points_than_components(tmp_path):
    """bmm K=10 fitted on 64-pixel digits: 3 values per point is one line, exit 2 (it was a JAX
    traceback); 2 points of 64 pixels are assigned (K > N refuses a fit, not a prediction)."""
    _, run, _ = fit(tmp_path, "model=bmm", "data.n=200", "steps=20", "restarts=2")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    (tmp_path / "w3.csv").write_text("1,0,1\n0,1,1\n")
    (tmp_path / "two.csv").write_text("\n".join(",".join(["1"] * 32 + ["0"] * 32) for _ in range(2)) + "\n")
    bad = subprocess.run([sys.executable, "-m", "runner.predict", f"run_id={run.info.run_id}", f"tracking.uri={uri}",
                          "data=file", "data.path=w3.csv"], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "runner.predict: error: the new data has points of shape (3,), the run was fitted on points of shape "
        "(64,): give data with 64 value(s) per point"]
    ok = subprocess.run([sys.executable, "-m", "runner.predict", f"run_id={run.info.run_id}", f"tracking.uri={uri}",
                         "data=file", "data.path=two.csv", f"out={tmp_path}/p.json"], cwd=tmp_path,
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    pred = json.loads((tmp_path / "p.json").read_text())
    assert pred["n"] == 2 and pred["assignment"][0] == pred["assignment"][1]  # the same image, the same component
    assert np.asarray(pred["assignment_probs"]).shape == (2, 10)


def test_predict_em_run_reproduces_its_assignments(tmp_path):
    _, run, run_dir = fit(tmp_path, "model=bmm", "inference=em", "restarts=2", "data.n=200")
    out = subprocess.run([sys.executable, "-m", "runner.predict", f"run_id={run.info.run_id}",
                          f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", "data.n=50", f"out={tmp_path}/p.json"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    logged = json.loads((run_dir / "assignments.json").read_text())["assignment"]
    assert json.loads((tmp_path / "p.json").read_text())["assignment"] == logged[:50]


def test_pyfunc_model_loads_predicts_and_serves(tmp_path, tracking_uri):
    """The fit logged as an MLflow pyfunc model: load_model(...).predict gives the run's own
    assignments; `mlflow models serve` answers the same (posterior predictive draws: below)."""
    import os
    import urllib.request

    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_cli(["model=gmm", "guide=autodelta", "restarts=10", f"tracking.uri={uri}",
                    f"hydra.run.dir={tmp_path}/gmm"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # logging the model adds no warnings
    runs = {"gmm": proc.stdout.split("run_id=")[1].split()[0]}
    tracking_uri(uri)
    gmm = mlflow.pyfunc.load_model(f"runs:/{runs['gmm']}/model")
    data = np.array([0.0, 1.0, 10.0, 11.0, 12.0], np.float32)  # the tutorial's data
    logged = json.loads((tmp_path / "gmm" / "assignments.json").read_text())["assignment"]
    assert gmm.predict(data).tolist() == logged
    assert sorted(logged) == [0, 0, 1, 1, 1] or sorted(logged) == [0, 0, 0, 1, 1]
    low, high = gmm.predict(np.array([0.3, 10.6], np.float32)).tolist()
    assert (low, high) == (logged[0], logged[-1])
    # the logged model (MLflow 3's Models tab): in the run's experiment, with the run's params and
    # its metrics at the model's step 0 (each scalar and each curve's first point), as MLflow
    # links them when the model is logged after them
    client = mlflow.MlflowClient(uri)
    run = client.get_run(runs["gmm"])
    (model,) = client.search_logged_models([run.info.experiment_id])
    assert model.source_run_id == run.info.run_id and model.name == "model"
    assert model.params == run.data.params
    at_step0 = {(key, m.value) for key in run.data.metrics for m in client.get_metric_history(run.info.run_id, key)
                if m.step == 0}
    assert {(m.key, m.value) for m in model.metrics} == at_step0
    assert len(model.metrics) == len(at_step0) == len(run.data.metrics)  # every metric has a step 0
    assert {"final_loss", "loss", "initial_loss"} <= {m.key for m in model.metrics}
    # mlflow models serve, as a user runs it (the venv's bin on PATH for its uvicorn)
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri,
           "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"}
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "mlflow"), "models", "serve",
                               "--env-manager", "local", "-m", f"runs:/{runs['gmm']}/model", "-p", str(port),
                               "-h", "127.0.0.1"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", server, timeout=180)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                         data=json.dumps({"inputs": data.tolist()}).encode(),
                                         headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        assert answer == {"predictions": logged}
    finally:
        server.terminate()
        server.wait(timeout=30)
