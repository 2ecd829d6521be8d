"""runner.predict reads a run's fit back from the store as untrusted data (issue 28): a
posterior.npz or latents.json (params.json for EM) that is garbage, not an npz, an object array,
not JSON, NaN or inf, of the wrong shape, or outside its site's support is one line naming the
run and the file, exit 2, no predictions written and the store unchanged. Real runs in a real
sqlite store; the artifact is altered in the store as someone with write access to it would."""
import hashlib
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import fit_cli

from runner.predict import main


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three fits in one store: coin with an AutoNormal guide (posterior.npz of an interval site),
    gmm's point estimate (a simplex and a positive site), gmm by EM (params.json)."""
    folder = tmp_path_factory.mktemp("store")
    ids = {}
    for name, args in {"coin": ("model=coin", "guide=autonormal", "steps=50"), "gmm": ("model=gmm", "steps=50"),
                       "em": ("model=gmm", "inference=em", "restarts=2")}.items():
        run = fit_cli(folder, *args, run=name)[2]
        ids[name] = run.info.run_id
    return folder, ids


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def coin_draws(folder, run_id):
    with np.load(folder / "mlruns" / "1" / run_id / "artifacts" / "posterior.npz") as f:
        return f["latent_fairness"]


def state(folder) -> str:
    """The store: its database and every artifact, hashed."""
    h = hashlib.sha256((folder / "mlflow.db").read_bytes())
    for path in sorted((folder / "mlruns").rglob("*")):
        if path.is_file():
            h.update(str(path).encode() + path.read_bytes())
    return h.hexdigest()


GMM = {"weights": [0.4, 0.6], "scale": 0.6, "locs": [0.5, 11.0]}
EM = {"locs": [[0.5], [11.0]], "variances": [[0.25], [0.6]], "weights": [0.4, 0.6]}
# (run, file, its content (bytes, or a function of the stored draws), what the line says after "<file>")
CASES = [
    ("coin", "posterior.npz", b"garbage, not a zip", " is not a .npz file (it starts b'garbage,')"),
    ("coin", "posterior.npz", b"\x80\x04\x95\x10\x00\x00\x00\x00", " is not a .npz file (it starts b'\\x80\\x04"),
    ("coin", "posterior.npz", lambda d: npz(latent_fairness=np.array([{"a": 1}, 2], dtype=object)),
     " cannot be read (ValueError: Object arrays cannot be loaded when allow_pickle=False)"),
    ("coin", "posterior.npz", lambda d: npz(latent_fairness=d)[:300], " cannot be read (BadZipFile"),
    ("coin", "posterior.npz", lambda d: npz(latent_fairness=np.where(np.arange(len(d)) == 5, np.nan, d)),
     ": 'latent_fairness' is NaN or inf at 1 of 2000 values"),
    ("coin", "posterior.npz", lambda d: npz(latent_fairness=np.where(np.arange(len(d)) == 5, -np.inf, d)),
     ": 'latent_fairness' is NaN or inf at 1 of 2000 values"),
    ("coin", "posterior.npz", lambda d: npz(latent_fairness=np.where(np.arange(len(d)) < 3, d + 1, d)),
     ": 'latent_fairness' is outside the site's support (Interval(lower_bound=0.0, upper_bound=1.0)) at 3 draw(s)"),
    ("coin", "posterior.npz", lambda d: npz(latent_fairness=np.full((2000, 3), 0.5, np.float32)),
     ": 'latent_fairness' has shape (3,) per draw, the model's site has shape ()"),
    ("coin", "posterior.npz", lambda d: npz(latent_fairness=np.array(["0.5", "0.6"])),
     ": 'latent_fairness' holds text where numbers belong"),
    ("coin", "posterior.npz", lambda d: npz(latent_fairness=d, extra=np.zeros(7)),
     " does not hold the same number (at least 1) of draws of each site: latent_fairness (2000,), extra (7,)"),
    ("coin", "posterior.npz", lambda d: npz(latent_fairness=d[:0]), " does not hold the same number"),
    ("coin", "latents.json", b"{not json", " is not JSON (Expecting property name"),
    ("coin", "latents.json", b'{"latent_fairness": NaN}', " is not JSON (NaN is not a JSON number)"),
    ("coin", "latents.json", b'{"latent_fairness": -Infinity}', " is not JSON (-Infinity is not a JSON number)"),
    ("coin", "latents.json", b'{"latent_fairness": 1e400}', ": 'latent_fairness' is NaN or inf at 1 of 1 values"),
    ("coin", "latents.json", b'{"latent_fairness": 1.2}', ": 'latent_fairness' is outside the site's support"),
    ("coin", "latents.json", b'{"latent_fairness": "0.5"}', ": 'latent_fairness' holds text where numbers belong"),
    ("coin", "latents.json", b'{"latent_fairness": null}', ": 'latent_fairness' holds mixed values where numbers"),
    ("coin", "latents.json", b'{"latent_fairness": 0.5, "bias": 1}', " names 'bias', not a latent site of model 'coin'"),
    ("coin", "latents.json", b"[0.5]", " is not a JSON object of named values"),
    ("coin", "latents.json", b"\xff\xfe{", " is not JSON ('utf-8' codec can't decode byte 0xff"),
    ("gmm", "latents.json", {**GMM, "weights": [0.9, 0.9]}, ": 'weights' is outside the site's support (Simplex())"),
    ("gmm", "latents.json", {**GMM, "weights": [-0.5, 1.5]}, ": 'weights' is outside the site's support (Simplex())"),
    ("gmm", "latents.json", {**GMM, "scale": -0.6}, ": 'scale' is outside the site's support (Positive("),
    ("gmm", "latents.json", {**GMM, "locs": [[1], [2, 3]]}, ": 'locs' is not an array of numbers"),
    ("gmm", "latents.json", {**GMM, "locs": [0.5, 11.0, 3.0]}, ": 'locs' has shape (3,), the model's site has shape (2,)"),
    ("em", "params.json", b'{"locs": [[0.5], [11]], "variances": [[NaN], [0.6]], "weights": [0.4, 0.6]}',
     " is not JSON (NaN is not a JSON number)"),
    ("em", "params.json", {**EM, "locs": [0.5, 11.0]},
     (" holds {'locs': (2,), 'variances': (2, 1), 'weights': (2,)}, EM's parameters of this model are")),
    ("em", "params.json", {**EM, "weights": ["a", 0.6]}, ": 'weights' holds text where numbers belong"),
]


@pytest.mark.parametrize("run,name,content,said", CASES, ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_a_bad_file_read_back_is_one_line_and_changes_nothing(runs, tmp_path, capsys, run, name, content, said):
    folder, ids = runs
    path = folder / "mlruns" / "1" / ids[run] / "artifacts" / name
    stored = path.read_bytes()
    if callable(content):
        content = content(coin_draws(folder, ids[run]))
    elif isinstance(content, dict):
        content = json.dumps(content).encode()
    try:
        path.write_bytes(content)
        before = state(folder)
        capsys.readouterr()
        code = main([f"run_id={ids[run]}", f"tracking.uri=sqlite:///{folder}/mlflow.db", f"out={tmp_path}/p.json"])
        err = capsys.readouterr().err
        assert state(folder) == before  # nothing changed in the store
    finally:
        path.write_bytes(stored)
    assert code == 2
    assert err.startswith(f"runner.predict: error: run {ids[run]}: {name}{said}") and err.count("\n") == 1, err
    assert not (tmp_path / "p.json").exists()


def test_em_parameters_the_model_cannot_use_never_predict(runs, tmp_path, capsys):
    """Negative variances pass every check of form and shape; the responsibilities they give are
    NaN: refused, never a prediction."""
    folder, ids = runs
    path = folder / "mlruns" / "1" / ids["em"] / "artifacts" / "params.json"
    stored = path.read_bytes()
    try:
        path.write_text(json.dumps({**EM, "variances": [[-0.25], [0.6]]}))
        code = main([f"run_id={ids['em']}", f"tracking.uri=sqlite:///{folder}/mlflow.db", f"out={tmp_path}/p.json"])
    finally:
        path.write_bytes(stored)
    assert code == 2 and not (tmp_path / "p.json").exists()
    assert capsys.readouterr().err == (f"runner.predict: error: run {ids['em']}: the predictions of 'assignment_probs' "
                                       "are NaN or inf: the fit's params.json hold values the model cannot use\n")


def test_the_untouched_runs_predict_and_the_cli_says_one_line(runs, tmp_path):
    """The files as the fit wrote them predict (the checks refuse nothing real); the CLI's line
    for a pickle in posterior.npz, as a user sees it (no traceback)."""
    folder, ids = runs
    uri = f"sqlite:///{folder}/mlflow.db"
    for run in ids:
        assert main([f"run_id={ids[run]}", f"tracking.uri={uri}", f"out={tmp_path}/{run}.json"]) == 0
    draws = json.loads((tmp_path / "coin.json").read_text())["obs"]
    assert 0.3 < np.mean(draws["mean"]) < 0.8 and np.mean(draws["std"]) > 0.3  # draws, not a constant
    path = folder / "mlruns" / "1" / ids["coin"] / "artifacts" / "posterior.npz"
    stored = path.read_bytes()
    try:
        path.write_bytes(b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94.")
        proc = subprocess.run([sys.executable, "-m", "runner.predict", f"run_id={ids['coin']}", f"tracking.uri={uri}",
                               f"out={tmp_path}/cli.json"], cwd=tmp_path, capture_output=True, text=True)
    finally:
        path.write_bytes(stored)
    assert proc.returncode == 2 and proc.stdout == "" and not (tmp_path / "cli.json").exists()
    assert proc.stderr == (f"runner.predict: error: run {ids['coin']}: posterior.npz is not a .npz file "
                           "(it starts b'\\x80\\x04\\x95\\x10\\x00\\x00\\x00\\x00')\n")
