"""Issue 5: EM against scikit-learn on digits, the tutorial's collapsed NUTS, infer_discrete
assignments, Predictive posterior draws, the MNIST IDX loader and predict-from-a-logged-run.
Real CLI subprocesses against real sqlite stores."""
import gzip
import json
import struct
import subprocess
import sys
from itertools import permutations
from pathlib import Path

import numpy as np
import pytest
from conftest import fit_cli, read_runs, run_cli

from runner.data import digits, mnist
from runner.errors import ConfigError

pytestmark = pytest.mark.slow


def fit(tmp_path, *args):
    return fit_cli(tmp_path, *args)[1:]


def same_partition(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return any((np.array(p)[a] == b).all() for p in permutations(range(max(a.max(), b.max()) + 1)))


# --- EM ----------------------------------------------------------------------------------------

def test_em_gmm_on_digits_matches_sklearn(tmp_path):
    from sklearn.mixture import GaussianMixture

    R = 4
    client, run, run_dir = fit(tmp_path, "model=gmm", "data=digits", "model.K=10", "inference=em", f"restarts={R}")
    m = run.data.metrics
    X = digits()
    sk = GaussianMixture(10, covariance_type="diag", n_init=R, random_state=0).fit(X).score(X)
    assert m["avg_loglik"] >= sk - 0.01 * abs(sk), (m["avg_loglik"], sk)
    assert m["final_loss"] == pytest.approx(-m["avg_loglik"])
    assert run.data.tags["inference"] == "em" and "guide" not in run.data.tags
    # per-iteration history: as many points as iterations, EM never decreases the likelihood
    hist = [x.value for x in sorted(client.get_metric_history(run.info.run_id, "loglik"), key=lambda x: x.step)
            if x.step < m["iterations"]]
    assert len(hist) == m["iterations"] > 2
    assert np.all(np.diff(hist) >= -1e-3)
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert arts == {"plots/loglik.png", "plots/components.png"}
    assign = json.loads((run_dir / "assignments.json").read_text())["assignment"]
    assert len(assign) == len(X) and set(assign) <= set(range(10))


def test_em_bmm_beats_one_component_and_is_monotone(tmp_path):
    client, run, _ = fit(tmp_path, "model=bmm", "inference=em", "restarts=2")
    X = digits(binarize=0.5)
    p = np.clip(X.mean(0), 1e-6, 1 - 1e-6)  # the K=1 maximum likelihood, analytic
    one = float(np.mean(X @ np.log(p) + (1 - X) @ np.log1p(-p)))
    m = run.data.metrics
    assert m["avg_loglik"] > one + 5, (m["avg_loglik"], one)
    hist = [x.value for x in sorted(client.get_metric_history(run.info.run_id, "loglik"), key=lambda x: x.step)]
    assert np.all(np.diff(hist) >= -1e-3)


def test_svi_on_digits_logs_the_same_loglik_scale(tmp_path):
    """inference=svi on the same data logs avg_loglik too (the UI compares EM and SGD)."""
    from runner.inference.em import e_step  # noqa: F401  (the metric is EM's e_step at the SVI point estimate)

    _, run, run_dir = fit(tmp_path, "model=gmm", "data=digits", "data.n=300", "model.K=3", "steps=50",
                          "restarts=2", "optim.lr=0.1")
    m = run.data.metrics
    latents = json.loads((run_dir / "latents.json").read_text())
    X = digits(n=300)
    var = np.maximum(np.asarray(latents["scale"]) ** 2, 1e-6)  # floored at reg_covar, as documented
    locs, w = np.asarray(latents["locs"]), np.asarray(latents["weights"])
    log_pdf = -0.5 * (np.log(2 * np.pi * var) + (X[:, None, :] - locs[None]) ** 2 / var).sum(-1)
    from scipy.special import logsumexp

    assert m["avg_loglik"] == pytest.approx(float(logsumexp(np.log(w) + log_pdf, axis=1).mean()), rel=1e-4)


# --- NUTS --------------------------------------------------------------------------------------

def test_collapsed_nuts_on_the_tutorial_gmm(tmp_path):
    client, run, run_dir = fit(tmp_path, "model=gmm", "inference=nuts", "inference.chains=2")
    with np.load(run_dir / "posterior.npz", allow_pickle=False) as z:
        locs = z["locs"]
    assert locs.shape == (2 * 250, 2)  # 2 vectorised chains x 250 samples (tutorial's 50 warmup)
    assert np.abs(np.sort(locs, axis=1).mean(0) - [0.5, 11.0]).max() < 1.0
    m = run.data.metrics
    assert {"r_hat/locs", "n_eff/locs", "r_hat/scale", "n_eff/weights", "posterior/scale/mean",
            "posterior/scale/std", "posterior/locs.1/mean"} <= set(m)
    assert 0.9 < m["r_hat/scale"] < 2 and m["n_eff/scale"] > 1
    assert m["posterior/scale/mean"] == pytest.approx(float(np.load(run_dir / "posterior.npz")["scale"].mean()), rel=1e-4)
    assert m["posterior/scale/std"] == pytest.approx(float(np.load(run_dir / "posterior.npz")["scale"].std()), rel=5e-3)
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/trace.png" in arts
    assign = json.loads((run_dir / "assignments.json").read_text())["assignment"]
    assert same_partition(assign, [0, 0, 1, 1, 1])


# --- discrete inference and posterior draws ------------------------------------------------------

def test_map_assignments_and_full_guide_probs(tmp_path):
    _, _, run_dir = fit(tmp_path, "model=gmm", "guide=manual")
    out = json.loads((run_dir / "assignments.json").read_text())
    assert same_partition(out["assignment"], [0, 0, 1, 1, 1])
    probs = np.asarray(out["assignment_probs"])
    assert probs.shape == (5, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert (probs.argmax(1) == out["assignment"]).all()



def test_compiled_assignments_and_loglik_are_per_model_settings():
    """The post-fit programs (MAP assignments, avg_loglik) are compiled once per model family and
    settings: an equal model reuses them, a different K or scale gets its own, and the answers are
    the closed form: argmax_k w_k N(x | mu_k, s) and mean_n log sum_k w_k N(x_n | mu_k, s)."""
    from scipy.stats import norm

    from runner.models.gmm import GMM
    from runner import posterior
    from runner.inference.em import average_loglik

    x = np.array([-1.0, 0.2, 4.0, 5.5, 9.0])
    posterior._PROGRAMS.clear()  # (in-process tests before this one may have made some)
    cases = [(GMM(K=2), {"weights": np.array([0.4, 0.6]), "locs": np.array([0.0, 5.0]), "scale": np.array(1.0)}),
             (GMM(K=2), {"weights": np.array([0.5, 0.5]), "locs": np.array([0.0, 9.0]), "scale": np.array(2.0)}),
             (GMM(K=3), {"weights": np.array([0.2, 0.3, 0.5]), "locs": np.array([0.0, 5.0, 9.0]),
                         "scale": np.array(0.7)}),
             (GMM(K=3, scale=3.0), {"weights": np.array([0.2, 0.3, 0.5]), "locs": np.array([0.0, 5.0, 9.0])})]
    for model, lat in cases:
        s = model.fixed_scale or float(lat["scale"])
        joint = np.log(lat["weights"]) + norm.logpdf(x[:, None], lat["locs"][None], s)
        assert (posterior.assignments(model, lat, x)["assignment"] == joint.argmax(1)).all()
        ll = np.log(np.exp(joint).sum(1)).mean()
        assert average_loglik(model, lat, x) == pytest.approx(ll, rel=1e-5)
    keys = [k for k in posterior._PROGRAMS if k[0] is GMM]
    assert len(keys) == 3 * 2  # K=2, K=3, K=3 with a fixed scale; two programs each
    assert posterior.model_program(GMM(K=2), ("e_step", "latents"), lambda: None) is not None  # reused, not rebuilt

def test_posterior_samples_from_the_coin_guide(tmp_path):
    client, run, run_dir = fit(tmp_path, "model=coin", "guide=manual", "posterior.samples=4000")
    with np.load(run_dir / "posterior.npz", allow_pickle=False) as z:
        f, obs = z["latent_fairness"], z["obs"]
    assert f.shape == (4000,) and obs.shape == (4000, 20) and set(np.unique(obs)) <= {0.0, 1.0}
    # the exact posterior is Beta(1 + 12, 1 + 8): mean 13/22; the mock data's heads rate follows it
    assert f.mean() == pytest.approx(13 / 22, abs=0.02)
    assert obs.mean() == pytest.approx(f.mean(), abs=0.02)
    assert "plots/posterior_predictive.png" in {a.path for a in client.list_artifacts(run.info.run_id, "plots")}


def test_posterior_samples_refused_for_em(tmp_path):
    proc = run_cli(["model=gmm", "inference=em", "posterior.samples=10",
                    f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "runner: error: posterior.samples needs a posterior: use inference=svi or inference=nuts "
        "(EM gives a point estimate)"]


# --- MNIST IDX loader ----------------------------------------------------------------------------

def write_idx(path: Path, x: np.ndarray, compress: bool):
    raw = struct.pack(">BBBB", 0, 0, 0x08, x.ndim) + struct.pack(f">{x.ndim}I", *x.shape) + x.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_loader(tmp_path, compress):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28))
    name = "train-images-idx3-ubyte" + (".gz" if compress else "")
    write_idx(tmp_path / name, images, compress)
    x = mnist(str(tmp_path), n=5)
    assert x.shape == (5, 784) and x.dtype == np.float32
    np.testing.assert_allclose(x, images[:5].reshape(5, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(mnist(str(tmp_path / name), n=None, binarize=0.5),
                                  (images.reshape(7, -1) / 255.0 > 0.5).astype(np.float32))


def test_idx_loader_refuses_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ConfigError, match="not an IDX file"):
        mnist(str(tmp_path / "bad"))
    write_idx(tmp_path / "short", np.zeros((3, 4, 4)), False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-5])
    with pytest.raises(ConfigError, match="truncated"):
        mnist(str(tmp_path / "short"))
    with pytest.raises(ConfigError, match="no MNIST"):
        mnist(str(tmp_path))
    np.savez(tmp_path / "m.npz", x_train=np.full((4, 28, 28), 255, np.uint8))
    assert mnist(str(tmp_path / "m.npz")).shape == (4, 784)


def test_mnist_from_idx_files_on_the_command_line(tmp_path):
    rng = np.random.default_rng(1)
    ink = np.zeros((40, 28, 28), np.uint8)
    ink[:20, :14] = 255  # two obvious clusters: top half inked or bottom half inked
    ink[20:, 14:] = 255
    ink = np.where(rng.random(ink.shape) < 0.05, 255 - ink, ink)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", ink, True)
    _, run, run_dir = fit(tmp_path, "model=bmm", "data=mnist", f"data.path={tmp_path}", "data.binarize=0.5",
                          "model.K=2", "inference=em", "restarts=2")
    assign = json.loads((run_dir / "assignments.json").read_text())["assignment"]
    assert same_partition(assign, [0] * 20 + [1] * 20)
    assert run.data.params["data.n"] == "2000"


# --- predict from a logged run ---------------------------------------------------------------------

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
    assert bad.returncode == 2 and bad.stderr.startswith("runner.predict: error: no run 0123")


def test_predict_em_run_reproduces_its_assignments(tmp_path):
    _, run, run_dir = fit(tmp_path, "model=bmm", "inference=em", "restarts=2", "data.n=200")
    out = subprocess.run([sys.executable, "-m", "runner.predict", f"run_id={run.info.run_id}",
                          f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", "data.n=50", f"out={tmp_path}/p.json"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    logged = json.loads((run_dir / "assignments.json").read_text())["assignment"]
    assert json.loads((tmp_path / "p.json").read_text())["assignment"] == logged[:50]
