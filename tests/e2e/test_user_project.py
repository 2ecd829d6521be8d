"""A user's own model: plain NumPyro functions in a project folder (examples/my_project) with
their own conf/, fitted through the CLI as a new user runs it, checked against long NUTS runs of
the same functions made here and against least squares; predictions through runner.predict, the
pyfunc model and the installed console scripts; a sweep over its seeds. (A function model
in-process: tests/unit/test_models.py, test_guides.py, test_em.py.)"""
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLE, fit_cli, read_runs, run_cli, user_module



@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the example project: the user's folder, their store in it."""
    tmp = tmp_path_factory.mktemp("user") / "my_project"
    shutil.copytree(EXAMPLE, tmp, ignore=shutil.ignore_patterns("__pycache__", "mlruns", "outputs", "*.db"))
    import subprocess  # the user's project is a git repository: its commit is the run's source commit

    git = ["git", "-c", "user.email=user@example.com", "-c", "user.name=user"]
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-qm", "my models"]):
        subprocess.run([*git, *cmd], cwd=tmp, check=True, capture_output=True)
    return tmp


cli = fit_cli  # (proc, client, run, run directory)


def long_nuts(fn, data, samples=2000, chains=4, seed=1):
    """The reference: a long NUTS run of the same function, made here."""
    import jax
    from numpyro.infer import MCMC, NUTS

    mcmc = MCMC(NUTS(fn), num_warmup=1000, num_samples=samples, num_chains=chains,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), **data)
    return {k: np.asarray(v) for k, v in mcmc.get_samples().items()}


def eight_schools_data():
    d = json.loads((EXAMPLE / "eight_schools.json").read_text())
    return {"J": d["J"], "y": np.array(d["y"], np.float32), "sigma": np.array(d["sigma"], np.float32)}


def regression_data():
    xy = np.loadtxt(EXAMPLE / "regression.csv", delimiter=",", skiprows=1, dtype=np.float32)
    return xy[:, 0], xy[:, 1]


@pytest.fixture(scope="module")
def eight_schools_reference():
    return long_nuts(user_module().eight_schools, eight_schools_data())


@pytest.fixture(scope="module")
def regression_reference():
    x, y = regression_data()
    return long_nuts(user_module().regression, {"x": x, "y": y})


def test_readme_spelling_fits_a_plain_function(project):
    """`model=fn model.fn=mymodels.eight_schools data=json ...`: the README's spelling, with
    everything a run logs for any model."""
    proc, client, run, run_dir = cli(project, "model=fn", "model.fn=mymodels.eight_schools", "data=json",
                                     "data.path=eight_schools.json", "guide=autonormal", "steps=3000",
                                     "optim.lr=0.01")
    assert "eight_schools/autonormal" in proc.stdout
    tags, m = run.data.tags, run.data.metrics
    assert tags["model"] == "fn" and tags["model.fn"] == "mymodels.eight_schools"
    assert tags["runner.version"] and tags["mlflow.runName"].startswith("eight_schools-autonormal")
    import subprocess

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()
    assert tags["mlflow.source.git.commit"] == head  # the user's project, not runner's
    summary = json.loads((run_dir / "summary.json").read_text())
    # latent and deterministic sites, NumPyro's summary format
    assert set(summary) == {"mu", "tau", "theta_tilde", "theta"}
    assert set(summary["mu"]) == {"mean", "std", "median", "5.0%", "95.0%"}
    assert len(summary["theta"]["mean"]) == 8
    assert m["posterior/mu/mean"] == pytest.approx(summary["mu"]["mean"])
    assert m["posterior/theta.7/std"] == pytest.approx(summary["theta"]["std"][7])
    # theta = mu + tau * theta_tilde, draw by draw, so the means agree to sampling precision
    assert 0 < summary["tau"]["mean"] < 10 and abs(summary["mu"]["mean"] - 4.4) < 1.5
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"summary.json", "model_source", "plots", "posterior.npz"} <= arts
    with np.load(run_dir / "posterior.npz", allow_pickle=False) as z:  # the guide's draws, for predictions
        assert set(z.files) == {"mu", "tau", "theta_tilde"} and z["theta_tilde"].shape == (2000, 8)
        assert z["mu"].mean() == pytest.approx(summary["mu"]["mean"], rel=1e-5)
    src = {a.path for a in client.list_artifacts(run.info.run_id, "model_source")}
    assert src == {"model_source/mymodels.py"}
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/eight_schools.png" in plots  # the default figure: marginals, never blank
    from PIL import Image

    img = np.asarray(Image.open(run_dir / "plots" / "eight_schools.png").convert("L"), dtype=float)
    assert img.std() > 10  # something is drawn


def test_eight_schools_nuts_matches_a_long_nuts_run(project, eight_schools_reference):
    """The config folder's model (--config-dir conf model=eight_schools) by NUTS: mu and tau
    as the long reference run here (and the well-known mu ~ 4.4, tau ~ 3.6)."""
    _, _, run, run_dir = cli(project, "--config-dir", "conf", "model=eight_schools", "inference=nuts",
                             "inference.chains=2", "inference.warmup=500", "inference.samples=1000",
                             run="nuts")
    summary = json.loads((run_dir / "summary.json").read_text())
    ref = eight_schools_reference
    for site in ("mu", "tau"):
        sd = ref[site].std()
        # Monte Carlo error of 2 x 1000 draws: ~0.05 sd for mu, more for tau's long tail
        assert abs(summary[site]["mean"] - ref[site].mean()) < 0.2 * sd, (site, summary[site], ref[site].mean())
        assert summary[site]["r_hat"] < 1.05
    assert abs(ref["mu"].mean() - 4.4) < 0.3 and abs(ref["tau"].mean() - 3.6) < 0.4
    assert run.data.metrics["divergences"] < 20
    # predict from the chains for new standard errors: J (a size) comes from the fit's constants
    (project / "sigma.csv").write_text("sigma\n" + "\n".join(["1.0"] * 8) + "\n")
    from runner.predict import main

    out_file = project / "es_pred.json"
    import os

    os.environ["RUNNER_TRUST"] = "mymodels"
    sys.path.insert(0, str(project))
    try:
        code = main([f"run_id={run.info.run_id}", f"tracking.uri=sqlite:///{project}/mlflow.db", "data=csv",
                     f"data.path={project / 'sigma.csv'}", "samples=1000", f"out={out_file}"])
    finally:
        sys.path.remove(str(project))
        del os.environ["RUNNER_TRUST"]
    assert code == 0
    pred = json.loads(out_file.read_text())["obs"]
    # with sigma = 1 the draws of obs follow theta: their means are theta's posterior means
    assert np.allclose(pred["mean"], summary["theta"]["mean"], atol=0.6)


def test_regression_automvn_matches_least_squares_and_nuts(project, regression_reference):
    """AutoMultivariateNormal on the CSV regression: slope and intercept at least squares', every
    posterior mean within a fraction of NUTS's posterior sd."""
    _, _, run, run_dir = cli(project, "--config-dir", "conf", "model=regression", "guide=automvn", run="mvn")
    summary = json.loads((run_dir / "summary.json").read_text())
    x, y = regression_data()
    slope, intercept = np.polyfit(x, y, 1)
    ref = regression_reference
    assert abs(summary["beta"]["mean"] - slope) < 0.25 * ref["beta"].std()
    assert abs(summary["alpha"]["mean"] - intercept) < 0.25 * ref["alpha"].std()
    for site in ("alpha", "beta", "sigma"):
        assert abs(summary[site]["mean"] - ref[site].mean()) < 0.25 * ref[site].std(), site
        assert summary[site]["std"] == pytest.approx(ref[site].std(), rel=0.15), site


def test_predict_and_pyfunc_take_named_inputs(project, monkeypatch, tracking_uri):
    """runner.predict with a CSV of covariates only, and the pyfunc model with a DataFrame: the
    observed site is drawn at the new x, around alpha + beta x."""
    import pandas as pd

    _, client, run, run_dir = cli(project, "--config-dir", "conf", "model=regression", "guide=autonormal",
                                  "posterior.samples=200", run="pred")
    summary = json.loads((run_dir / "summary.json").read_text())
    a, b = summary["alpha"]["mean"], summary["beta"]["mean"]
    (project / "new.csv").write_text("x\n0.0\n5.0\n10.0\n")
    from runner.predict import main

    out_file = project / "pred.json"
    monkeypatch.chdir(project)  # the user's folder: mymodels is importable from it, as with python -m
    monkeypatch.syspath_prepend(str(project))
    args = [f"run_id={run.info.run_id}", f"tracking.uri=sqlite:///{project}/mlflow.db",
            f"data.path={project / 'new.csv'}", "samples=2000", f"out={out_file}"]
    assert main(args) == 2  # a stored config naming user code is data: trusted only when the reader says so
    assert not out_file.exists()
    code = main([*args, "trust=mymodels"])
    assert code == 0
    out = json.loads(out_file.read_text())
    assert out["n"] == 3 and set(out) == {"run_id", "inference", "n", "y"}
    expected = a + b * np.array([0.0, 5.0, 10.0])
    assert np.allclose(out["y"]["mean"], expected, atol=0.15), (out["y"]["mean"], expected)
    sigma = summary["sigma"]["mean"]
    assert np.allclose(out["y"]["std"], sigma, rtol=0.2)

    import mlflow

    tracking_uri(f"sqlite:///{project}/mlflow.db")
    monkeypatch.setenv("RUNNER_TRUST", "mymodels")
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    draws = model.predict(pd.DataFrame({"x": [0, 5, 10]}), params={"samples": 2000})  # integers for a float x
    assert draws.shape == (2000, 3)
    assert np.allclose(draws.mean(0), expected, atol=0.15)
    # the posterior predictive plot compares y with y, never with the covariate x
    assert (run_dir / "plots" / "posterior_predictive.png").is_file()


def test_sweep_over_seeds_of_a_user_model(project):
    uri = f"sqlite:///{project}/sweep.db"
    proc = run_cli(["-m", "--config-dir", "conf", "model=regression", "guide=autonormal", "steps=500",
                    "seed=0,1", f"tracking.uri={uri}", f"hydra.sweep.dir={project}/multirun"], cwd=project)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, runs = read_runs(uri)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 3 and len(children) == 2
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.params["seed"] for r in children} == {"0", "1"}
    # the same sweep again after the model file changed: its jobs are not 'already FINISHED'
    src = project / "mymodels.py"
    src.write_text(src.read_text() + "\n# edited\n")
    again = run_cli(["-m", "--config-dir", "conf", "model=regression", "guide=autonormal", "steps=500",
                     "seed=0,1", f"tracking.uri={uri}", f"hydra.sweep.dir={project}/multirun2"], cwd=project)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "runner: skipped" not in again.stdout and "2 run, 0 skipped" in again.stdout
    _, runs = read_runs(uri)
    assert len([r for r in runs if "mlflow.parentRunId" in r.data.tags]) == 4


def test_binary_outcome_through_the_console_scripts(tmp_path):
    """A logistic regression fitted and predicted with the installed console scripts (`runner`,
    `runner-predict`) from the user's folder (its module importable there, as with python -m):
    predictions of the 0/1 outcome are draws (their mean a probability), not assignments."""
    import subprocess

    (tmp_path / "logit.py").write_text(
        "import jax.numpy as jnp\nimport numpyro\nimport numpyro.distributions as dist\n\n"
        "def logistic(x, y=None):\n"
        "    a = numpyro.sample('a', dist.Normal(0.0, 5.0))\n"
        "    b = numpyro.sample('b', dist.Normal(0.0, 5.0))\n"
        "    with numpyro.plate('N', x.shape[0]):\n"
        "        numpyro.sample('y', dist.Bernoulli(logits=a + b * x), obs=y)\n")
    rng = np.random.default_rng(3)
    x = rng.normal(size=200)
    y = (rng.random(200) < 1 / (1 + np.exp(-(0.5 + 2.0 * x)))).astype(int)
    (tmp_path / "d.csv").write_text("x,y\n" + "".join(f"{a:.4f},{b}\n" for a, b in zip(x, y)))
    (tmp_path / "new.csv").write_text("x\n-1.0\n0.0\n1.0\n")
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "PYTHONPATH")}
    fit = subprocess.run([bin_dir / "runner", "model=fn", "model.fn=logit.logistic", "data=csv", "data.path=d.csv",
                          "guide=autonormal", "hydra.run.dir=run"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert fit.returncode == 0, fit.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    sites = json.loads((tmp_path / "run" / "sites.json").read_text())
    assert sites["observed"] == ["y"] and sites["enumerated"] == []
    assert set(sites["point_shapes"]) == {"x", "y"} and sites["point_shapes"]["y"] == []  # what predict checks
    _, runs = read_runs(f"sqlite:///{tmp_path}/mlflow.db")
    pred = subprocess.run([bin_dir / "runner-predict", f"run_id={runs[0].info.run_id}", "data.path=new.csv",
                           "trust=logit", "samples=4000", "out=p.json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert pred.returncode == 0, pred.stderr[-2000:]
    out = json.loads((tmp_path / "p.json").read_text())
    assert set(out) == {"run_id", "inference", "n", "y"} and out["y"]["draws"] == 4000
    a, b = summary["a"]["mean"], summary["b"]["mean"]
    expected = 1 / (1 + np.exp(-(a + b * np.array([-1.0, 0.0, 1.0]))))
    # posterior predictive P(y=1 | x): near the plug-in sigmoid (the posterior is narrow, n=200)
    assert np.allclose(out["y"]["mean"], expected, atol=0.05), (out["y"]["mean"], expected)
