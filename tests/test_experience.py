"""Issue 7 (part): readable run names, machine tags, the data set as an MLflow input, the
end-of-run summary table."""
import subprocess

import numpy as np
import pytest
from conftest import ROOT, free_port, read_runs, run_cli, run_cli_tty, wait_http

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
    # provenance: the user's project is the folder the command ran in (here: no repository);
    # runner's own commit when it runs from a checkout
    assert "mlflow.source.git.commit" not in tags and tags["runner.version"]
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert tags["runner.git_commit"] == head.stdout.strip()
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


def test_progress_chunks_change_no_number():
    """The progress line runs the fit in chunks; every number equals the one-call fit's."""
    import io

    import jax

    from runner.api import compose
    from runner.experiment import build
    from runner.inference.svi_program import fit
    from runner.progress import Progress

    cfg, _ = compose(["model=gmm", "guide=autodelta", "select=final", "restarts=3", "replicates=2", "steps=60"])
    exp = build(cfg)
    whole = fit(exp)
    shown = Progress(exp.inference.steps, stream=io.StringIO(), quiet_s=0.0, every_s=0.0)
    shown.chunk_s = 1e-6  # a chunk of a step or two: the most boundaries there can be
    chunked = fit(exp, progress=shown)
    assert shown.updates > 10
    for a, b in zip(whole, chunked):
        for x, y in zip(jax.tree.leaves(a.__dict__), jax.tree.leaves(b.__dict__)):
            np.testing.assert_array_equal(x, y)
    lines = shown.stream.getvalue().splitlines()
    assert len(lines) == shown.updates - 1  # the first chunk (with the compile) is not shown
    best = min(r.losses[:, -1].min() for r in chunked)
    assert lines[-1].startswith("runner: step 60/60  loss ") and "steps/s" in lines[-1]
    assert float(lines[-1].split()[4]) == pytest.approx(best, rel=1e-5)


def test_progress_line_on_a_terminal_and_pyfunc_draws(tmp_path):
    """A fit of a few seconds redraws one line on a terminal; progress=false shows none. The
    (converged) coin fit's pyfunc model draws from the posterior predictive of Beta(13, 9)."""
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["model=coin", "guide=manual", "steps=150000", f"tracking.uri={uri}"]
    code, out, tty = run_cli_tty(args, cwd=tmp_path)
    assert code == 0, tty[-2000:]
    redraws = [x for x in tty.split("\r") if x.startswith("runner: step ")]
    assert len(redraws) >= 3, tty[-2000:]
    assert all("steps/s" in x and "left" in x for x in redraws)
    steps = [int(x.split()[2].split("/")[0]) for x in redraws]
    assert steps == sorted(steps) and steps[-1] == 150000
    assert tty.rstrip("\r\n").endswith("\x1b[K")  # the line ends with a newline after the last redraw
    assert "final_loss=" in out
    mlflow.set_tracking_uri(uri)
    coin = mlflow.pyfunc.load_model(f"runs:/{out.split('run_id=')[1].split()[0]}/model")
    flips = coin.predict(np.ones(20, np.float32), params={"samples": 4000})
    assert flips.shape == (4000, 20) and set(np.unique(flips)) <= {0, 1}
    assert flips.mean() == pytest.approx(13 / 22, abs=0.03)  # P(heads) under the posterior
    code, out, tty = run_cli_tty([*args, "progress=false"], cwd=tmp_path)
    assert code == 0 and "final_loss=" in out
    assert "steps/s" not in tty


def test_pyfunc_model_loads_predicts_and_serves(tmp_path):
    """The fit logged as an MLflow pyfunc model: load_model(...).predict gives the run's own
    assignments; `mlflow models serve` answers the same (posterior predictive draws: below)."""
    import json
    import os
    import sys
    import urllib.request

    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_cli(["model=gmm", "guide=autodelta", "restarts=10", f"tracking.uri={uri}",
                    f"hydra.run.dir={tmp_path}/gmm"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # logging the model adds no warnings
    runs = {"gmm": proc.stdout.split("run_id=")[1].split()[0]}
    mlflow.set_tracking_uri(uri)
    gmm = mlflow.pyfunc.load_model(f"runs:/{runs['gmm']}/model")
    data = np.array([0.0, 1.0, 10.0, 11.0, 12.0], np.float32)  # the tutorial's data
    logged = json.loads((tmp_path / "gmm" / "assignments.json").read_text())["assignment"]
    assert gmm.predict(data).tolist() == logged
    assert sorted(logged) == [0, 0, 1, 1, 1] or sorted(logged) == [0, 0, 0, 1, 1]
    low, high = gmm.predict(np.array([0.3, 10.6], np.float32)).tolist()
    assert (low, high) == (logged[0], logged[-1])
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


def test_gallery_figure_from_a_real_run(tmp_path):
    """`make gallery` runs the listed commands and copies their plots (one figure here)."""
    import sys

    out = subprocess.run([sys.executable, "-m", "runner.gallery", str(tmp_path / "g"), "coin_posterior.png"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    png = (tmp_path / "g" / "coin_posterior.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < len(png) < 200_000  # a real, small figure
    committed = ROOT / "docs" / "gallery"
    from runner.gallery import GALLERY

    assert sorted(p.name for p in committed.glob("*.png")) == sorted(GALLERY)
    bad = subprocess.run([sys.executable, "-m", "runner.gallery", str(tmp_path / "g"), "nope.png"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "nope.png" in bad.stderr
