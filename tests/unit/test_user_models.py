"""A user's NumPyro model as its author wrote it (tests/fixtures/user_models/written_models.py):
called the way NumPyro calls it (no data, scalars only, NumPy on the data's values), its discrete
sites assigned for any number of plates, and data that disagree with its plates refused before
the fit in one line that names the array and the plate."""
import json
from pathlib import Path

import numpy as np
import pytest

import runner
from runner.errors import ConfigError

MODELS = Path(__file__).parents[1] / "fixtures" / "user_models"
UCB = {"dept": [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5], "male": [1, 0] * 6,
       "applications": [825, 108, 560, 25, 325, 593, 417, 375, 191, 393, 373, 341],
       "admit": [512, 89, 353, 17, 120, 202, 138, 131, 53, 94, 22, 24]}


@pytest.fixture
def models(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(MODELS))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def data(tmp_path, name, obj, raw=None):
    path = tmp_path / f"{name}.json"
    path.write_text(raw if raw is not None else json.dumps(obj))
    return ["data=json", f"data.path={path}"]


NUTS = ["inference=nuts", "inference.chains=2", "inference.warmup=500", "inference.samples=1000", "tracking=none"]


def test_scalars_only_binomial_matches_its_beta_posterior(models):
    """binom(n, k) on {"n": 20, "k": 12}: used to be refused ("missing 1 required positional
    argument: 'data'"). Beta(1, 1) prior: the posterior is Beta(13, 9)."""
    exp, res = runner.fit_config(["model=fn", "model.fn=written_models.binom",
                                  *data(models, "binom", {"n": 20, "k": 12}), *NUTS])
    assert exp.data is None and exp.model.constants == {"n": 20, "k": 12}
    p = res.samples["p"].ravel()
    mean, sd = 13 / 22, np.sqrt(13 * 9 / (22 ** 2 * 23))
    assert abs(p.mean() - mean) < 0.2 * sd and abs(p.std() - sd) < 0.2 * sd


@pytest.mark.parametrize("how", [["data=none"], "json"])
def test_a_model_without_data_samples_its_prior(models, how):
    """prior_only() and funnel(dim=10) with data=none, and funnel's dim given as JSON."""
    exp, res = runner.fit_config(["model=fn", "model.fn=written_models.prior_only", "data=none", *NUTS])
    z = res.samples["z"].ravel()
    assert abs(z.mean() - 1.0) < 0.2 * 2.0 and abs(z.std() - 2.0) < 0.2 * 2.0
    args = how if how != "json" else data(models, "funnel", {"dim": 4})
    exp = runner.build(runner.compose(["model=fn", "model.fn=written_models.funnel", *args])[0])
    out = runner.fit(exp)
    assert out.latents["x"].shape == ((9,) if how != "json" else (3,))


def test_numpy_on_the_data_is_fitted_with_concrete_data(models):
    """ucb does `len(np.unique(dept))` (NumPyro's UCB admissions example): the abstract trace
    fails, so the model is traced and fitted with its data's values, and gives the same fit as
    the same model with the 6 departments written in."""
    args = ["model=fn", *data(models, "ucb", UCB), "guide=autonormal", "steps=300", "optim.lr=0.05"]
    exp, got = runner.fit_config([*args, "model.fn=written_models.ucb"])
    assert exp.model.concrete
    twin, want = runner.fit_config([*args, "model.fn=written_models.ucb_fixed"])
    assert not twin.model.concrete
    np.testing.assert_allclose(got.losses, want.losses, rtol=1e-4)
    with pytest.raises(ConfigError, match="computes with its data's values .* drop data.batch_size"):
        runner.build(runner.compose([*args, "model.fn=written_models.ucb", "data.batch_size=4"])[0])


def test_two_plates_of_enumerated_sites_are_assigned(models):
    """z[j, i] in two plates: the assignment step used to hard-code first_available_dim=-2 and crash
    after the fit ("Ran out of free dims"). Rows 0-5 are drawn around 0, rows 6-11 around 3."""
    rng = np.random.default_rng(0)
    y = np.concatenate([rng.normal(0, 0.3, (6, 3)), rng.normal(3, 0.3, (6, 3))])
    out = runner.run(["model=fn", "model.fn=written_models.enum2", *data(models, "enum2", {"y": y.tolist()}),
                      "loss=traceenum", "steps=100", "tracking=none"], run_dir=models / "run", quiet=True)
    z = np.asarray(json.loads((out.run_dir / "assignments.json").read_text())["z"])
    np.testing.assert_array_equal(z, np.repeat([[0], [1]], [6, 6], axis=0) * np.ones((1, 3), int))


REFUSED = [  # (model, data as JSON text, the one line's text)
    ("reg", '{"x": [1, 2, 3, 4, 5, 6, 7, 8], "y": [1, 2, 3, 4, 5, 6, 7]}',
     "model 'reg': data 'y' has shape (7,), but site 'y' has shape (8,), plate 'data' of 8: the data's lengths disagree"),
    ("reg", '{"x": [1, 2, 3, 4, 5, 6, 7, 8], "y": [1.5]}',
     "model 'reg': data 'y' has shape (1,): one value would be broadcast over the 8 rows of plate 'data'"),
    ("reg_n", '{"N": 10, "x": [1, 2, 3, 4, 5, 6, 7, 8], "y": [1, 2, 3, 4, 5, 6, 7, 8]}',
     "model 'reg_n' fails on this data: ValueError: Incompatible shapes for broadcasting"),  # ...; the data: x (8,), y (8,), N=10
    ("reg_n", '{"N": 7.5, "x": [1, 2, 3, 4, 5, 6, 7], "y": [1, 2, 3, 4, 5, 6, 7]}',
     "model 'reg_n': plate 'data' has size 7.5 (data 'N'): a plate's size is a whole number of rows"),
    ("reg_n", '{"N": Infinity, "x": [1, 2, 3], "y": [1, 2, 3]}', "'N' is inf, not a finite number"),
    ("reg", '{"x": [1, 2, 3], "y": [1, 2, 1e39]}', "'y' has a value of 1e+39, beyond float32's range"),
]


@pytest.mark.parametrize("model, text, message", REFUSED, ids=[m[2][:40] for m in REFUSED])
def test_data_that_disagree_with_the_model_are_one_line(models, model, text, message):
    cfg, _ = runner.compose(["model=fn", f"model.fn=written_models.{model}", *data(models, "d", None, raw=text)])
    with pytest.raises(ConfigError) as e:
        runner.build(cfg)
    assert message in str(e.value) and len(str(e.value).splitlines()) == 1
    if model == "reg_n" and "N=10" in text.replace(" ", "").replace('"N":', "N="):
        assert str(e.value).endswith("; the data: x (8,), y (8,), N=10")
