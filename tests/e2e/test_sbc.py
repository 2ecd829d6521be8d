"""check=sbc (runner/check/sbc.py) as a user runs it: `python -m runner <a run's overrides> check=sbc`,
real processes, real sqlite stores. The verdicts where the answer is known (fixed seeds):
- the coin's Beta guide holds the exact posterior Beta(1 + heads, 1 + tails): calibrated;
- autodelta is a point: every true value lies above or below all its draws (ranks 0 or L), the
  U shape of an underdispersed posterior;
- a mean-field guide (autonormal) on a strongly correlated Gaussian (seed 004's rotated Gaussian,
  sigma = (0.3, 3) at 45 degrees, as a proper prior seen through noise: posterior correlation 0.97)
  has marginals about 0.26 of the posterior's sd: underdispersed; the full-covariance guide
  (automvn) holds the exact Gaussian posterior: calibrated (a sweep compares them);
- NUTS on eight schools, non-centred (examples/my_project): calibrated.
A model that cannot simulate its data is refused in one line, exit 2, before any run is opened."""
import json

import numpy as np
from conftest import EXAMPLE, fit_cli, read_runs, run_cli

PARENT = "mlflow.parentRunId"

COIN = ["model=coin", "steps=1000", "optim.lr=0.01", "check=sbc", "check.simulations=100", "progress=false"]

ROTATED = '''
import math

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist


def rotated(y):
    """Seed 004's rotated Gaussian, sigma = (0.3, 3) at 45 degrees, as the prior of z, observed twice
    through Normal noise of sd 5: the posterior of z keeps a correlation of -0.97."""
    c, s = math.cos(math.pi / 4), math.sin(math.pi / 4)
    rot = jnp.array([[c, -s], [s, c]])
    cov = rot @ jnp.diag(jnp.array([0.3, 3.0]) ** 2) @ rot.T
    z = numpyro.sample("z", dist.MultivariateNormal(jnp.zeros(2), cov))
    with numpyro.plate("N", y.shape[0]):
        numpyro.sample("y", dist.Normal(z, 5.0).to_event(1), obs=y)
'''


def artifacts(client, run) -> set:
    def walk(path):
        for f in client.list_artifacts(run.info.run_id, path):
            yield from walk(f.path) if f.is_dir else [f.path]

    return set(walk(None))


def sweep(folder, args):
    """(the command's output, the store's client, the parent run, its children) of a multirun."""
    uri = f"sqlite:///{folder}/mlflow.db"
    proc = run_cli(["-m", *args, f"tracking.uri={uri}", f"hydra.sweep.dir={folder}/multirun", "progress=false"],
                   cwd=folder)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    client, runs = read_runs(uri)
    parents = [r for r in runs if PARENT not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    return proc, client, parents[0], [r for r in runs if r.data.tags.get(PARENT) == parents[0].info.run_id]


def test_the_coins_exact_beta_guide_is_calibrated_in_one_run_with_its_ranks_plot_and_verdict(tmp_path):
    proc, client, run, run_dir = fit_cli(tmp_path, *COIN, "guide=manual")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("runner: coin/manual sbc"))
    assert "simulations=100 draws=100 (one program" in line and "latent_fairness: calibrated" in line
    assert "calibration  calibrated (100 simulations, 100 draws each; one program" in proc.stdout
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["check"] == "sbc" and tags["sbc_verdict"] == "calibrated" and tags["sbc/latent_fairness"] == "calibrated"
    assert tags["inference"] == "svi" and tags["guide"] == "manual" and tags["sbc_fit"] == "one program"
    assert metrics["sbc/latent_fairness/outside_band"] == 0 and metrics["sbc_simulations"] == 100
    assert abs(metrics["sbc/latent_fairness/rank_var"] - 1 / 12) < 0.02
    assert {"sbc_ranks.npz", "sbc.json", "plots/sbc_ecdf.png", "config.yaml"} <= artifacts(client, run)
    assert len(read_runs(f"sqlite:///{tmp_path}/mlflow.db")[1]) == 1  # one run: no run per simulation
    ranks = np.load(run_dir / "sbc_ranks.npz")
    assert ranks["rank/latent_fairness"].shape == (100,) and ranks["true/latent_fairness"].shape == (100,)
    assert ((ranks["rank/latent_fairness"] >= 0) & (ranks["rank/latent_fairness"] <= 100)).all()
    report = json.loads((run_dir / "sbc.json").read_text())
    assert report["sites"]["latent_fairness"]["verdict"] == "calibrated" and len(report["band"]["lower"]) == 99


def test_a_point_estimate_is_underdispersed(tmp_path):
    proc = run_cli([*COIN, "guide=autodelta", "tracking=none", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "latent_fairness: underdispersed (outside band" in proc.stdout
    ranks = np.load(tmp_path / "run" / "sbc_ranks.npz")["rank/latent_fairness"]
    assert set(np.unique(ranks)) <= {0.0, 100.0}  # a point: the truth is above or below every draw
    site = json.loads((tmp_path / "run" / "sbc.json").read_text())["sites"]["latent_fairness"]
    assert site["rank_var"][0] > 0.2 and site["outside_band"][0] > 0.5  # 1/4 for ranks at the two ends, vs 1/12


def test_a_sweep_compares_guides_by_calibration_mean_field_underdispersed_full_covariance_calibrated(tmp_path):
    folder = tmp_path / "sweep"
    folder.mkdir()
    (folder / "rotated_model.py").write_text(ROTATED)
    (folder / "d.json").write_text('{"y": [[0.5, 1.0], [1.5, 2.0]]}')
    proc, client, parent, children = sweep(folder, [
        "model=fn", "model.fn=rotated_model.rotated", "data=json", f"data.path={folder}/d.json",
        "guide=autonormal,automvn", "steps=1000", "optim.lr=0.05", "check=sbc", "check.simulations=100"])
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    by_guide = {c.data.tags["guide"]: c for c in children}
    assert by_guide["autonormal"].data.tags["sbc/z"] == "underdispersed"
    assert by_guide["autonormal"].data.metrics["sbc/z/rank_var"] > 0.15  # vs 1/12: ranks pile up at both ends
    assert by_guide["automvn"].data.tags["sbc/z"] == "calibrated"
    assert by_guide["automvn"].data.metrics["sbc/z/outside_band"] == 0
    assert "job 1/2 rotated/autonormal sbc simulations=100" in proc.stdout
    assert "z: underdispersed (2/2 elements" in proc.stdout and "z: calibrated (2/2 elements" in proc.stdout
    said = [ln for ln in proc.stdout.splitlines() if ln.startswith("runner: sweep calibration ")]
    assert len(said) == 2  # each job's config group (its overrides), then its calibration
    assert "guide=autonormal" in said[0] and said[0].endswith(
        f": z underdispersed (run {by_guide['autonormal'].info.run_id})")
    assert "guide=automvn" in said[1] and said[1].endswith(f": calibrated (run {by_guide['automvn'].info.run_id})")


def test_nuts_on_eight_schools_non_centred_is_calibrated(tmp_path):
    """100 simulations x 1 chain of 200 warmup steps and 200 draws, thinned to 100, as one program."""
    proc = run_cli(["--config-dir", "conf", "model=eight_schools", "inference=nuts", "inference.chains=1",
                    "inference.warmup=200", "inference.samples=200", "check=sbc", "check.simulations=100",
                    "tracking=none", "progress=false", f"hydra.run.dir={tmp_path}/run"], cwd=EXAMPLE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "sbc.json").read_text())
    assert report["verdict"] == "calibrated", report["verdict"]
    assert set(report["sites"]) == {"mu", "tau", "theta_tilde"}
    assert report["sites"]["theta_tilde"]["elements"] == ["calibrated"] * 8
    assert "eight_schools/nuts sbc simulations=100 draws=100 (one program" in proc.stdout


def test_em_is_fitted_one_simulation_at_a_time_and_its_point_estimate_is_underdispersed(tmp_path):
    """EM (GMM on the tutorial's 5 points) has no vmappable fit here: each simulation by EM's own fit.
    A point estimate repeated as its draws ranks every true value 0 or L, as autodelta does."""
    proc = run_cli(["model=gmm", "inference=em", "check=sbc", "check.simulations=20", "tracking=none",
                    "progress=false", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "gmm/em sbc simulations=20 draws=100 (one at a time" in proc.stdout
    report = json.loads((tmp_path / "run" / "sbc.json").read_text())
    assert {n: s["verdict"] for n, s in report["sites"].items()} == {"weights": "underdispersed", "locs": "underdispersed"}


def test_a_model_that_cannot_simulate_is_refused_in_one_line_before_any_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_cli(["model=gaussian2d", "check=sbc", f"tracking.uri={uri}", f"hydra.run.dir={tmp_path}/run"],
                   cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "runner: error: check=sbc simulates data sets, but model 'gaussian2d' takes no data: it has no observed "
        "sites to simulate"]
    assert not (tmp_path / "mlflow.db").exists() or read_runs(uri)[1] == []
