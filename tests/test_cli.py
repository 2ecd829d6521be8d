"""`python -m runner` end to end in a subprocess against a temp sqlite store; read MLflow back."""
import json

import numpy as np
import pytest
from conftest import read_runs, run_cli
from omegaconf import OmegaConf

from runner.api import compose
from runner.experiment import flatten

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gmm_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    uri = f"sqlite:///{tmp}/mlflow.db"
    args = ["model=gmm", "guide=autodelta", f"tracking.uri={uri}", "tracking.experiment=cli-test",
            f"hydra.run.dir={tmp}/run"]
    proc = run_cli(args, cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    client, runs = read_runs(uri, "cli-test")
    return proc, client, runs, tmp, args


def test_one_finished_run_with_summary_line(gmm_run):
    proc, _, runs, _, _ = gmm_run
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    line = [l for l in proc.stdout.splitlines() if l.startswith("runner:")]
    assert len(line) == 1
    assert f"run_id={run.info.run_id}" in line[0] and "final_loss=17.4433" in line[0]


def test_tags_are_the_config_choices(gmm_run):
    _, _, runs, _, _ = gmm_run
    tags = runs[0].data.tags
    assert {k: tags[k] for k in ("model", "guide", "loss", "optim")} == {
        "model": "gmm", "guide": "autodelta", "loss": "traceenum", "optim": "adam"}


def test_params_are_every_config_leaf(gmm_run):
    _, _, runs, _, args = gmm_run
    params = runs[0].data.params
    cfg, _ = compose([a for a in args if not a.startswith("hydra.")])
    expected = flatten(cfg)
    assert {k: params[k] for k in expected} == expected
    assert set(params) == set(expected) | {"jax_version", "key_derivation"}
    assert params["optim.lr"] == "0.1" and params["optim.b1"] == "0.8" and params["restarts"] == "100"
    import jax

    assert params["jax_version"] == jax.__version__


def test_metrics(gmm_run):
    _, client, runs, _, _ = gmm_run
    run = runs[0]
    m = run.data.metrics
    assert m["final_loss"] == pytest.approx(17.4433, abs=2e-3)
    assert m["initial_loss"] == pytest.approx(25.1498, abs=0.02)
    assert m["restarts_trained"] == 1
    assert m["final_loss_min"] <= m["final_loss_median"] <= m["final_loss_max"]
    assert m["initial_loss_min"] == pytest.approx(m["initial_loss"])
    loss = client.get_metric_history(run.info.run_id, "loss")
    assert [p.step for p in sorted(loss, key=lambda p: p.step)] == list(range(200))
    for name in ("locs_auto_loc", "scale_auto_loc", "weights_auto_loc"):
        hist = client.get_metric_history(run.info.run_id, f"grad_norm/{name}")
        assert len(hist) == 200 and all(np.isfinite(p.value) and p.value >= 0 for p in hist)
    assert set(m) == {"loss", "final_loss", "initial_loss", "best_restart", "restarts_trained",
                      "final_loss_min", "final_loss_median", "final_loss_max", "initial_loss_min",
                      "initial_loss_median", "initial_loss_max", "grad_norm/locs_auto_loc",
                      "grad_norm/scale_auto_loc", "grad_norm/weights_auto_loc", "avg_loglik", "restarts_failed",
                      *(f"posterior/{site}/{stat}" for site in ("weights.0", "weights.1", "locs.0", "locs.1", "scale")
                        for stat in ("mean", "std"))}
    assert m["restarts_failed"] == 0
    # AutoDelta: the posterior summary is the MAP point itself, spread 0
    assert m["posterior/scale/mean"] == pytest.approx(0.6514, abs=1e-3) and m["posterior/scale/std"] == 0
    assert sorted([m["posterior/locs.0/mean"], m["posterior/locs.1/mean"]]) == pytest.approx([0.499, 10.985], abs=2e-3)
    # average log-likelihood of the data at the MAP (weights .375/.625, locs .499/10.985, scale .6514)
    x = np.array([0.0, 1.0, 10.0, 11.0, 12.0])[:, None]
    w, mu, sd = np.array([0.375, 0.625]), np.array([0.49897, 10.98464]), 0.651434
    dens = (w * np.exp(-0.5 * ((x - mu) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))).sum(1)
    assert m["avg_loglik"] == pytest.approx(np.log(dens).mean(), abs=1e-3)


def test_artifacts(gmm_run, tmp_path):
    _, client, runs, tmp, _ = gmm_run
    run_id = runs[0].info.run_id
    names = {a.path for a in client.list_artifacts(run_id)} | {
        a.path for a in client.list_artifacts(run_id, "plots")}
    assert {"config.yaml", "params.json", "metrics.json", "plots/loss.png", "plots/gmm.png"} <= names
    local = client.download_artifacts(run_id, "params.json", str(tmp_path))
    params = json.loads(open(local).read())
    order = np.argsort(params["locs_auto_loc"])
    np.testing.assert_allclose(np.array(params["locs_auto_loc"])[order], [0.4989534, 10.984944], atol=5e-3)
    np.testing.assert_allclose(np.array(params["weights_auto_loc"])[order], [0.375, 0.625], atol=2e-3)
    cfg = OmegaConf.load(client.download_artifacts(run_id, "config.yaml", str(tmp_path)))
    assert cfg.steps == 200 and cfg.model.K == 2
    # the run directory holds the same files, written before MLflow was called
    assert json.loads((tmp / "run" / "params.json").read_text()) == params
    png = (tmp / "run" / "plots" / "gmm.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_bad_combination_is_one_line_and_no_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_cli(["model=bmm", "guide=manual", f"tracking.uri={uri}", f"hydra.run.dir={tmp_path}/run"],
                   cwd=tmp_path)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert err == ["runner: error: model 'bmm' has no manual guide: choose another guide= "
                   "(autodelta, autonormal, automvn, autolowrank, autolaplace, autoiaf, mixture)"]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()  # refused before any fit or store


def test_console_script_is_installed():
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "runner"  # installed into the venv by `pip install -e .`
    assert exe.is_file()
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "model: " in out.stdout and "gmm" in out.stdout
