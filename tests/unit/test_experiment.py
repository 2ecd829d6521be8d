"""runner/experiment.py and runner/checks.py: a composed config -> a typed Experiment, or one
ConfigError line for every refusal that can be known before a fit (in-process: the CLI turns each
into `runner: error: <line>` and exit 2, tests/e2e/test_cli_errors.py)."""
import re

import pytest
from omegaconf import OmegaConf

from runner.api import compose
from runner.errors import ConfigError
from runner.experiment import build, flatten


def files(tmp_path):
    (tmp_path / "nan.csv").write_text("1\nnan\n3\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "flat.csv").write_text("0\n1\n1\n")


REFUSED = [  # (overrides, the ConfigError's line: the start of it)
    (["steps=abc"], "steps must be a positive integer, got 'abc'"),
    (["steps=0"], "steps must be a positive integer, got 0"),
    (["steps=-3"], "steps must be a positive integer, got -3"),
    (["restarts=0"], "restarts must be a positive integer, got 0"),
    (["optim.lr=-0.1"], "optim.lr must be a positive finite number, got -0.1"),
    (["loss.num_particles=0"], "loss.num_particles must be a positive integer, got 0"),
    (["model=bmm", "guide=manual"], "model 'bmm' has no manual guide"),
    (["model=coin", "guide=autodelta", "+guide.init_loc_fn=x"], "cannot build guide"),
    (["model=gmm", "loss=trace"], "model 'gmm' has enumerated discrete sites: use loss=traceenum"),
    (["data=file", "data.path={tmp}/missing.csv"], "data file not found: {tmp}/missing.csv"),
    (["data=file", "data.path={tmp}/nan.csv"], "data {tmp}/nan.csv contains NaN or inf"),
    (["data=file", "data.path={tmp}/empty.csv"], "data {tmp}/empty.csv is empty"),
    (["model=bmm", "data=file", "data.path={tmp}/flat.csv"], "model 'bmm' needs data of shape (N, D), got (3,)"),
    (["model.K=10"], "model.K=10 is larger than the number of data points (5)"),
    (["checkpoint.every_s=0"], "checkpoint.every_s must be a positive number of seconds or null, got 0"),
    (["checkpoint.every_s=abc"], "checkpoint.every_s must be a positive number of seconds or null, got 'abc'"),
    (["model=bmm", "data=digits"], "model 'bmm' needs binary data: set data.binarize=<threshold>"),
    # the user's own command is their code, as in Hydra: the target is used (here called with the
    # model's keys); configs read back from a store are held to runner.trust (tests/unit/test_trust.py)
    (["model._target_=os.system"], "cannot build model: TypeError: system() takes at most 1 keyword argument"),
    (["model._target_=null"], "model._target_ must be a dotted path such as mymodels.MyModel, got None"),
    (["inference=em", "model=coin"], "inference=em has no updates for model 'coin'"),
    # the top-level settings build checks itself
    (["select=best"], "select must be one of initial|final, got 'best'"),
    (["seed=1.5"], "seed must be an integer from 0 to 2147483647, got 1.5"),
    (["progress=maybe"], "progress must be true or false, got 'maybe'"),
    (["posterior.samples=-1"], "posterior.samples must be an integer >= 0, got -1"),
    (["replicates=0"], "replicates must be a positive integer, got 0"),
]


@pytest.mark.parametrize("args,message", REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_refused_before_any_fit_in_one_line(tmp_path, args, message):
    files(tmp_path)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    message = message.replace("{tmp}", str(tmp_path))
    cfg, _ = compose(args)
    with pytest.raises(ConfigError, match="^" + re.escape(message)) as e:
        build(cfg)
    assert len(str(e.value).splitlines()) == 1
    assert not list(tmp_path.glob("**/metrics.json"))  # nothing was fitted or written


def test_the_experiment_carries_what_the_run_needs():
    cfg, _ = compose(["model=coin", "guide=manual", "seed=7", "restarts=3", "posterior.samples=5", "progress=false"])
    exp = build(cfg)
    assert (exp.method, exp.seed, exp.restarts, exp.posterior_samples, exp.progress) == ("svi", 7, 3, 5, False)
    assert exp.data.shape == (20,) and int(exp.data.sum()) == 12  # the seed's 12 heads of 20
    assert exp.data_source == "runner.data.coin_flips"
    assert exp.params["steps"] == "10000" and exp.params["model._target_"] == "runner.models.coin.Coin"
    assert OmegaConf.create(exp.config_yaml).seed == 7
    assert exp.cache_dir == cfg.jax.cache_dir
    assert len(exp.config_hash) == 16
    cfg, _ = compose(["model=coin", "guide=manual", "seed=8", "restarts=3", "posterior.samples=5", "progress=false"])
    assert build(cfg).config_hash != exp.config_hash  # another seed, another result


def test_the_compile_cache_is_under_home_unless_runner_jax_cache_says(monkeypatch, tmp_path):
    """jax.cache_dir: ~/.cache/runner/jax by default, RUNNER_JAX_CACHE when set (the tests' own
    folder: tests/conftest.py), the key itself over both."""
    monkeypatch.delenv("RUNNER_JAX_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert build(compose(["model=coin"])[0]).cache_dir == f"{tmp_path}/home/.cache/runner/jax"
    monkeypatch.setenv("RUNNER_JAX_CACHE", str(tmp_path / "cache"))
    assert build(compose(["model=coin"])[0]).cache_dir == f"{tmp_path}/cache"
    assert build(compose(["model=coin", "jax.cache_dir=/elsewhere"])[0]).cache_dir == "/elsewhere"
    assert build(compose(["model=coin", "jax.cache_dir=null"])[0]).cache_dir is None


def test_flatten_gives_every_leaf_by_its_dotted_path():
    cfg = OmegaConf.create({"a": {"b": 1, "c": [1, 2], "d": {"e": None}}, "f": "${a.b}", "g": "x"})
    assert flatten(cfg) == {"a.b": "1", "a.c": "[1, 2]", "a.d.e": "None", "f": "1", "g": "x"}
