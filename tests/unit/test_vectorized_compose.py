"""hydra_plugins/runner_vectorized/compose.py: a sweep's job configs composed once per choice of
config groups give exactly the config Hydra's own compose gives, for every kind of override."""
import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import setup_globals
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

from hydra_plugins.runner_vectorized.compose import Composer
from runner.__main__ import CONF_DIR


@pytest.fixture(scope="module")
def loaders():
    setup_globals()  # Hydra's resolvers (now), as a command has them
    def loader():
        return ConfigLoaderImpl(config_search_path=create_config_search_path(CONF_DIR))

    master = loader().load_configuration("config", ["hydra/launcher=vectorized", "hydra.sweep.dir=/tmp/x"],
                                         run_mode=RunMode.MULTIRUN)
    return master, loader(), Composer(loader())


def same(master, hydra_loader, composer, overrides):
    ours = composer.load_sweep_config(master, list(overrides))
    theirs = hydra_loader.load_sweep_config(master, list(overrides))
    texts = []
    for cfg in (ours, theirs):
        with open_dict(cfg):  # as the launcher sets them
            cfg.hydra.job.id = cfg.hydra.job.num = 0
            cfg.hydra.runtime.output_dir = "/tmp/x/0"
        HydraConfig.instance().set_config(cfg)  # ${hydra:...} resolves, as in a job
        texts.append((OmegaConf.to_yaml(cfg), OmegaConf.to_yaml(cfg, resolve=True)))
    assert texts[0] == texts[1]
    return ours


JOBS = [["model=gmm", "guide=autodelta", "optim.lr=0.01", "seed=0"],
        ["model=gmm", "guide=autodelta", "optim.lr=0.1", "seed=3"],  # values only: the copy
        ["model=gmm", "guide=autodelta", "optim.lr=0.3", "seed=1"],
        ["model=gmm", "guide=autonormal", "optim.lr=0.1", "seed=3"],  # another group choice: Hydra's
        ["model=gmm", "guide=autonormal", "optim.lr=0.03", "seed=2"],
        ["model=gmm", "guide=autonormal", "optim.lr=0.03", "seed=2", "model.prior_loc_scale=2.0"],
        ["model=gmm", "guide=autonormal", "optim.lr=0.3", "seed=2", "model.prior_loc_scale=5.5"],
        ["model=gmm", "optim=adam_cosine", "optim.schedule.alpha=0.1", "steps=20"],
        ["model=gmm", "optim=adam_cosine", "optim.schedule.alpha=0.5", "steps=30"],
        ["model=gmm", "+tracking.tags.note=a", "seed=1"],  # an add: Hydra's every time
        ["model=gmm", "+tracking.tags.note=b", "seed=2"],
        ["model=gmm", "tracking=none", "posterior.samples=null", "seed=5"],
        ["model=gmm", "tracking=none", "posterior.samples=20", "seed=6"],
        ["model=gmm", "hydra.launcher.prune=halving", "stop.rtol=1e-3", "seed=1"],
        ["model=gmm", "hydra.launcher.prune=halving", "stop.rtol=1e-4", "seed=2"],
        ["model=gmm", "tracking.experiment=a b", "seed=2"],
        ["model=gmm", "tracking.experiment='a=b'", "seed=3"],
        ["model=gmm", "optim.lr=0.2", "++optim.lr=0.5"],  # a ++ on a value's key: Hydra's order, every time
        ["model=gmm", "optim.lr=0.3", "++optim.lr=0.7"],
        ["model=gmm", "optim.lr=0.2", "~optim.b1"],
        ["model=gmm", "optim.lr=0.3", "~optim.b1"]]


def test_every_job_is_the_config_hydra_composes(loaders):
    master, hydra_loader, composer = loaders
    for overrides in JOBS:
        same(master, hydra_loader, composer, overrides)
    assert composer.hits == 9  # the second and later job of each choice of groups and value keys


def test_the_copy_is_the_jobs_own(loaders):
    master, hydra_loader, composer = loaders
    a = same(master, hydra_loader, composer, ["model=gmm", "optim.lr=0.05", "seed=7"])
    b = same(master, hydra_loader, composer, ["model=gmm", "optim.lr=0.07", "seed=8"])
    assert (a.optim.lr, a.seed, b.optim.lr, b.seed) == (0.05, 7, 0.07, 8)
    assert list(b.hydra.overrides.task) == ["model=gmm", "optim.lr=0.07", "seed=8"]
    assert b.hydra.job.override_dirname == "model=gmm,optim.lr=0.07,seed=8"


@pytest.mark.parametrize("bad", ["optim.nothere=1", "model=nothere", "optim.lr=[1"])
def test_a_bad_override_is_hydras_error(loaders, bad):
    master, hydra_loader, composer = loaders
    composer.load_sweep_config(master, ["model=gmm", "optim.lr=0.1"])
    with pytest.raises(Exception) as ours:
        composer.load_sweep_config(master, ["model=gmm", bad])
    with pytest.raises(Exception) as theirs:
        hydra_loader.load_sweep_config(master, ["model=gmm", bad])
    assert type(ours.value) is type(theirs.value) and str(ours.value) == str(theirs.value)


def test_a_value_that_another_override_acts_on_is_composed_by_hydra(loaders):
    """`optim.lr=0.2 ++optim.lr=0.5`: Hydra applies them in order (0.5); setting the plain value last
    on a copy would give 0.2. Such a job is never served from a copy."""
    master, hydra_loader, composer = loaders
    for lr in ("0.2", "0.3"):
        cfg = same(master, hydra_loader, composer, ["model=gmm", f"optim.lr={lr}", "++optim.lr=0.5"])
        assert cfg.optim.lr == 0.5
    before = composer.hits
    same(master, hydra_loader, composer, ["model=gmm", "optim.lr=0.4", "++optim.lr=0.5"])
    assert composer.hits == before
