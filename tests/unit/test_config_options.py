"""Every option of every config group composes and is built (lightning-hydra-template's habit):
`runner.build` instantiates the model, the data, the inference method and SVI's guide, loss and
optimizer and checks them together, and the tracking backend is built as runner.app builds it.
Each option runs in the smallest context that makes it a run (a data file it needs is written
here); what each one builds is stated below."""
import numpy as np
import pytest
from conftest import ROOT, write_idx
from hydra.utils import get_object

import runner
from runner.optim import LBFGS, OptaxOptimizer

CONF = ROOT / "runner" / "conf"

OPTIONS = {  # every YAML of every group; a new one fails test_the_options_are_the_conf_folders until listed
    "model": ["bmm", "coin", "fn", "gaussian2d", "gmm", "multimodal"],
    "guide": ["autodelta", "autoiaf", "autolaplace", "autolowrank", "automvn", "autonormal", "manual", "mixture"],
    "loss": ["trace", "traceenum"],
    "optim": ["adam", "adam_cosine", "adamw", "lbfgs", "sgd"],
    "data": ["coin", "csv", "digits", "digits_binary", "file", "gmm1d", "json", "mnist", "mnist_sample", "none", "npz"],
    "inference": ["em", "nuts", "svi"],
    "tracking": ["mlflow", "none"],
    "check": ["none", "sbc"],
}
CONTEXT = {  # the model each group's options are built with
    "model": [],  # each model's own defaults
    "guide": ["model=multimodal"],  # two continuous latent sites, a manual guide, nothing enumerated
    "loss": ["model=coin"],
    "optim": ["model=gmm"],  # autodelta + traceenum: a deterministic objective, which lbfgs needs
    "data": ["model=gmm"],
    "inference": ["model=gmm"],
    "tracking": ["model=coin"],
    "check": ["model=coin"],
}
FN = ["model=fn", "model.fn=options_model.model"]
EXTRA = {  # the fewest overrides an option needs besides its context ({tmp}: the files written below)
    ("model", "bmm"): ["data.n=100"],
    ("model", "fn"): ["model.fn=options_model.model", "data=json", "data.path={tmp}/d.json"],
    ("data", "csv"): [*FN, "data.path={tmp}/d.csv"],
    ("data", "json"): [*FN, "data.path={tmp}/d.json"],
    ("data", "npz"): [*FN, "data.path={tmp}/d.npz"],
    ("data", "file"): ["data.path={tmp}/x.npy"],
    ("data", "digits"): ["data.n=100"],
    ("data", "digits_binary"): ["model=bmm", "data.n=100"],
    ("data", "mnist"): ["data.path={tmp}", "data.n=20"],
    ("data", "mnist_sample"): ["data.n=100"],
    ("data", "none"): ["model=gaussian2d"],
}
ROWS = {"coin": 20, "csv": 3, "digits": 100, "digits_binary": 100, "file": 5, "gmm1d": 5, "json": 3,
        "mnist": 20, "mnist_sample": 100, "none": None, "npz": 3}  # the data each data option loads
LOSSES = {"trace": "Trace_ELBO", "traceenum": "TraceEnum_ELBO"}

CASES = [(group, option) for group, options in OPTIONS.items() for option in options]


def test_the_options_are_the_conf_folders():
    assert {g: sorted(p.stem for p in (CONF / g).glob("*.yaml")) for g in OPTIONS} == OPTIONS


@pytest.fixture
def files(tmp_path, monkeypatch):
    (tmp_path / "options_model.py").write_text(
        "import numpyro\nimport numpyro.distributions as dist\n\n\n"
        "def model(x):\n"
        "    mu = numpyro.sample('mu', dist.Normal(0.0, 10.0))\n"
        "    with numpyro.plate('data', x.shape[0]):\n"
        "        numpyro.sample('obs', dist.Normal(mu, 1.0), obs=x)\n")
    (tmp_path / "d.json").write_text('{"x": [0.5, 1.0, 1.5]}')
    (tmp_path / "d.csv").write_text("x\n0.5\n1.0\n1.5\n")
    np.savez(tmp_path / "d.npz", x=np.array([0.5, 1.0, 1.5]))
    np.save(tmp_path / "x.npy", np.array([0.0, 1.0, 10.0, 11.0, 12.0]))
    write_idx(tmp_path / "train-images-idx3-ubyte", np.random.default_rng(0).integers(0, 256, (20, 28, 28)), False)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("group, option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_every_option_builds(files, group, option):
    from runner.tracking import from_config as tracking_from_config

    extra = [a.replace("{tmp}", str(files)) for a in EXTRA.get((group, option), [])]
    cfg, choices = runner.compose([*CONTEXT[group], f"{group}={option}", *extra])
    assert choices[group] == option
    exp = runner.build(cfg)
    target = get_object(cfg[group]._target_) if option != "none" or group not in ("data", "check") else None
    if group == "model":
        assert type(exp.model) is target
    elif group == "guide":
        assert exp.inference.guide_builder.func is target
    elif group == "loss":
        assert type(exp.inference.loss).__name__ == LOSSES[option]
    elif group == "optim":
        assert type(exp.inference.optimizer) is (LBFGS if option == "lbfgs" else OptaxOptimizer)
    elif group == "data":
        rows = None if exp.data is None else len(next(iter(exp.data.values())) if isinstance(exp.data, dict) else exp.data)
        assert rows == ROWS[option]
    elif group == "inference":
        assert type(exp.inference) is target and exp.method == option
    elif group == "check":  # check=sbc is the run's method, around the configured one (SVI's)
        assert (type(exp.inference) is target and type(exp.inference.method).__name__ == "SVI"
                if option == "sbc" else type(exp.inference).__name__ == "SVI")
    else:  # a background backend (MLflow's) is built here and run in the tracking worker
        backend = tracking_from_config(cfg.tracking)
        assert type(getattr(backend, "backend", backend)) is target
