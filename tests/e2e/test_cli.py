"""`python -m runner` end to end in a subprocess against a temp sqlite store, MLflow read back: a
run's summary line and table, name, tags, params, metrics, artifacts, dataset input and provenance;
the progress line on a terminal; replicates as child runs; failed restarts and failed runs;
determinism across processes; the console script."""
import json
import shlex
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, read_runs, run_cli, run_cli_tty
from omegaconf import OmegaConf

from runner.api import compose
from runner.data import coin_flips
from runner.experiment import flatten


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
    assert {"config.yaml", "params.json", "metrics.json", "plots/loss.png", "plots/gmm.png", "inference_data.nc"} <= names
    # ArviZ reads the logged InferenceData back; the tutorial's MAP is a point estimate: LOO is
    # its plug-in log density (p_loo 0), with every Pareto k flagged
    import warnings

    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = az.from_netcdf(client.download_artifacts(run_id, "inference_data.nc", str(tmp_path)))
        loo = az.loo(idata)
    assert idata.attrs["point_estimate"] == 1 and float(loo.p_loo) == pytest.approx(0, abs=1e-4)
    assert idata.log_likelihood["obs"].shape == (1, 4, 5) and loo.warning
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


def test_run_name_tags_dataset_and_summary(tmp_path):
    import mlflow.data

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_cli(["model=coin", "guide=manual", "steps=30", "optim.lr=0.01", "seed=3", f"tracking.uri={uri}",
                    f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (run,) = read_runs(uri)[1]
    assert run.info.run_name == "coin-manual-steps30-lr0.01-seed3"
    tags = run.data.tags
    # what JAX reports in this environment (CPU, a GPU, several devices): a process of its own, as the run's
    probe = "import jax; d = jax.devices(); print(jax.default_backend(), len(d), d[0].device_kind, sep='|')"
    here = subprocess.run([sys.executable, "-c", probe], check=False, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert here.returncode == 0, here.stderr
    backend, count, kind = here.stdout.strip().splitlines()[-1].split("|")
    assert (tags["jax.backend"], tags["jax.device_count"], tags["jax.device_kind"]) == (backend, count, kind)
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
    table = dict(line.split(None, 1) for line in lines if line.startswith("  "))
    assert list(table) == ["run", "choices", "final_loss", "best_restart", "psis_khat", "outputs", "look"]
    assert table["psis_khat"] == f"{run.data.metrics['psis_khat']:.3g} ({tags['psis_verdict']}; 1000 draws)"
    assert table["run"] == f"coin-manual-steps30-lr0.01-seed3  ({run.info.run_id})"
    assert float(table["final_loss"]) == pytest.approx(run.data.metrics["final_loss"], rel=1e-5)
    # the hint works as printed, from where the command ran, whether or not the venv is activated
    assert table["look"].endswith(f" ui --backend-store-uri {uri}")
    hint = subprocess.run([*shlex.split(table["look"]), "--help"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert hint.returncode == 0 and "--backend-store-uri" in hint.stdout, hint.stderr[-2000:]


def test_progress_line_on_a_terminal_and_pyfunc_draws(tmp_path, tracking_uri):
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
    tracking_uri(uri)
    coin = mlflow.pyfunc.load_model(f"runs:/{out.split('run_id=')[1].split()[0]}/model")
    flips = coin.predict(np.ones(20, np.float32), params={"samples": 4000})
    assert flips.shape == (4000, 20) and set(np.unique(flips)) <= {0, 1}
    assert flips.mean() == pytest.approx(13 / 22, abs=0.03)  # P(heads) under the posterior
    code, out, tty = run_cli_tty([*args, "progress=false"], cwd=tmp_path)
    assert code == 0 and "final_loss=" in out
    assert "steps/s" not in tty


def test_replicates_logged_as_children(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_cli(["model=gmm", "guide=autonormal", "steps=30", "restarts=8", "select=final", "replicates=3",
                    f"tracking.uri={uri}", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    _, runs = read_runs(uri)
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parent) == 1 and len(children) == 3
    parent = parent[0]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(c.data.params["seed"] for c in children) == ["0", "1", "2"]
    finals = [c.data.metrics["final_loss"] for c in children]
    assert parent.data.metrics["final_loss_mean"] == pytest.approx(np.mean(finals), rel=1e-6)
    assert parent.data.metrics["final_loss_std"] == pytest.approx(np.std(finals), rel=1e-5, abs=1e-7)
    assert parent.data.metrics["replicates"] == 3


# --- numerical failure -----------------------------------------------------------------------------

def test_diverged_restarts_are_dropped_and_counted(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_cli(["model=gmm", "optim.lr=30", "select=final", "restarts=20", "steps=100", f"tracking.uri={uri}"],
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = read_runs(uri)[1][0]
    m = run.data.metrics
    assert run.info.status == "FINISHED"
    assert 1 <= m["restarts_failed"] < 20 and np.isfinite(m["final_loss"])


def test_all_restarts_diverged_is_a_failed_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_cli(["model=gmm", "optim.lr=1e6", "steps=50", f"tracking.uri={uri}"], cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "runner: error: all trained restarts diverged (1 of 100 trained; loss NaN/inf from step 1): lower optim.lr")
    client, runs = read_runs(uri)
    (run,) = runs
    assert run.info.status == "FAILED" and run.data.tags["failure_step"] == "1"
    m = run.data.metrics
    # select=initial trains the best-scored restart only: it is the one that failed
    assert m["restarts_failed"] == 1 and np.isfinite(m["initial_loss"]) and "final_loss" not in m
    loss = sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda p: p.step)
    assert len(loss) == 50 and np.isfinite(loss[0].value) and not np.isfinite(loss[1].value)


def test_same_config_and_seed_are_bit_identical(tmp_path):
    """Two processes with different string-hash seeds (as two commands of a user have; make test
    fixes PYTHONHASHSEED for the compile cache, see the Makefile)."""
    outs = []
    for k in range(2):
        d = tmp_path / f"r{k}"
        proc = run_cli(["model=coin", "guide=autonormal", "steps=200", "restarts=4", "select=final", "seed=3",
                        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"hydra.run.dir={d}"], cwd=tmp_path,
                       env={"PYTHONHASHSEED": str(k + 1)})
        assert proc.returncode == 0, proc.stderr
        outs.append(((d / "params.json").read_text(), json.loads((d / "metrics.json").read_text())))
    assert outs[0][0] == outs[1][0]
    assert outs[0][1]["curves"] == outs[1][1]["curves"] and outs[0][1]["scalars"] == outs[1][1]["scalars"]
