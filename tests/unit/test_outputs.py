"""runner/outputs.py: the run directory's writers. metrics.json holds every scalar and curve in
full; posterior.npz holds a guide's draws (none for a point estimate, thinned under a size cap);
what runner.predict reads is the files that are there."""
import json

import numpy as np

from runner import outputs
from runner.outputs import predict_files, to_lists, write_draws, write_json, write_metrics


def test_json_writers(tmp_path):
    assert write_metrics(tmp_path, {"final_loss": 1.5}, {"loss": [3.0, 1.5]}) == "metrics.json"
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"scalars": {"final_loss": 1.5},
                                                                  "curves": {"loss": [3.0, 1.5]}}
    params = to_lists({"w": np.array([[1, 2]], np.float32), "flow": ({"b": np.zeros(2)}, np.float32(0.5))})
    assert params == {"w": [[1.0, 2.0]], "flow": ({"b": [0.0, 0.0]}, 0.5)}  # a pytree param: its leaves as lists
    assert write_json(tmp_path / "sub" / "params.json", params) == "params.json"
    assert json.loads((tmp_path / "sub" / "params.json").read_text()) == {"w": [[1.0, 2.0]],
                                                                        "flow": [{"b": [0.0, 0.0]}, 0.5]}


def test_draws_are_kept_unless_they_are_a_point(tmp_path):
    rng = np.random.default_rng(0)
    point = {"loc": np.full((2000, 3), 0.5), "weight": np.ones(2000)}
    assert write_draws(point, tmp_path) == [] and not (tmp_path / "posterior.npz").exists()
    draws = {"loc": rng.normal(size=(2000, 3)), "scale": rng.gamma(2.0, size=(2000,)), "other": np.zeros(2000)}
    assert write_draws(draws, tmp_path) == ["posterior.npz"]
    with np.load(tmp_path / "posterior.npz") as z:
        assert sorted(z.files) == ["loc", "other", "scale"]
        np.testing.assert_array_equal(z["loc"], draws["loc"])


def test_draws_are_thinned_below_the_size_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs, "MAX_DRAW_BYTES", 800 * 8 * 10)  # room for 800 draws of 10 float64s
    draws = {"x": np.random.default_rng(1).normal(size=(2000, 10))}
    assert write_draws(draws, tmp_path) == ["posterior.npz"]
    with np.load(tmp_path / "posterior.npz") as z:
        np.testing.assert_array_equal(z["x"], draws["x"][:800])
    monkeypatch.setattr(outputs, "MAX_DRAW_BYTES", 99 * 8 * 10)  # fewer than MIN_DRAWS (100) fit: none
    (tmp_path / "posterior.npz").unlink()
    assert write_draws(draws, tmp_path) == [] and not (tmp_path / "posterior.npz").exists()


def test_predict_files_are_those_there(tmp_path):
    for name in ("config.yaml", "latents.json", "sites.json", "metrics.json"):
        (tmp_path / name).write_text("{}")
    assert predict_files(tmp_path) == {n: tmp_path / n for n in ("config.yaml", "latents.json", "sites.json")}
