"""runner/inference: methods chosen by `_target_`, their settings checked when built, EM's model
protocol (runner.models.mixtures.EMFamily) checked by the EM method."""
import pytest
from omegaconf import OmegaConf

import runner
from runner.errors import ConfigError
from runner.inference import FitOutput, Method, from_config
from runner.models import mixtures as em
from runner.inference.em import EM
from runner.inference.nuts import NUTS
from runner.inference.svi import SVI


@pytest.mark.parametrize("choice, cls", [("svi", SVI), ("em", EM), ("nuts", NUTS)])
def test_each_built_in_method_is_its_yaml_target(choice, cls):
    cfg, _ = runner.compose([f"inference={choice}"])
    method = from_config(cfg.inference)
    assert type(method) is cls and method.name == choice


def test_settings_come_from_the_yaml_and_overrides():
    cfg, _ = runner.compose(["inference=em", "inference.iterations=7", "inference.init=random"])
    method = from_config(cfg.inference)
    assert (method.iterations, method.tol, method.reg_covar, method.init) == (7, 1e-3, 1e-6, "random")
    cfg, _ = runner.compose(["inference=nuts", "inference.chains=3"])
    assert from_config(cfg.inference).chains == 3


@pytest.mark.parametrize("override, message", [
    ("inference=em inference.iterations=0", "inference.iterations must be a positive integer, got 0"),
    ("inference=em inference.tol=-1", "inference.tol must be a number >= 0, got -1"),
    ("inference=em inference.init=best", "inference.init must be one of kmeans|random, got 'best'"),
    ("inference=nuts inference.warmup=-1", "inference.warmup must be an integer >= 0, got -1"),
    ("inference=nuts inference.target_accept=1.5", r"inference.target_accept must be in \(0, 1\), got 1.5"),
    ("inference=nuts inference.init=prior", "inference.init must be one of median|uniform|sample"),
    ("inference._target_=builtins.dict", "inference._target_ must name an inference method"),
])
def test_bad_settings_are_one_config_error(override, message):
    cfg, _ = runner.compose(override.split())
    with pytest.raises(ConfigError, match=message):
        from_config(cfg.inference)


def test_an_inference_node_needs_its_target():
    method = from_config(OmegaConf.create({"_target_": "runner.inference.em.EM", "iterations": 5}))
    assert isinstance(method, EM) and method.iterations == 5
    for node in (None, OmegaConf.create({"method": "em"})):
        with pytest.raises(ConfigError, match="inference must be a config group with a _target_"):
            from_config(node)


def test_em_family_is_a_protocol_of_the_method_not_of_every_model():
    from runner.models.bmm import BMM
    from runner.models.coin import Coin
    from runner.models.function import FunctionModel
    from runner.models.gmm import GMM

    assert em.supports(GMM(K=2)) and em.supports(BMM(K=3))
    assert not em.supports(Coin())
    assert not hasattr(Coin(), "em_m_step") and not hasattr(Coin(), "has_em")  # no EM hooks on models

    def plain(x):
        pass

    assert not em.supports(FunctionModel(plain))

    def mixture(x):
        pass

    for hook in ("em_init", "em_log_joint", "em_m_step", "em_params"):
        setattr(mixture, hook, lambda *a: None)
    mixture.K = 2
    model = FunctionModel(mixture)
    assert em.supports(model) and model.em_m_step is mixture.em_m_step


def test_em_refuses_a_model_without_updates_and_replicates():
    cfg, _ = runner.compose(["model=coin", "inference=em"])
    with pytest.raises(ConfigError, match="inference=em has no updates for model 'coin'"):
        runner.build(cfg)
    cfg, _ = runner.compose(["model=gmm", "inference=em", "replicates=2"])
    with pytest.raises(ConfigError, match="replicates applies to inference=svi"):
        runner.build(cfg)
    cfg, _ = runner.compose(["model=gmm", "inference=nuts", "replicates=2"])
    with pytest.raises(ConfigError, match="replicates applies to inference=svi; for inference=nuts"):
        runner.build(cfg)


def test_a_method_defined_here_runs_through_build_and_fit():
    """Method's surface is all build and fit need: a method that returns the prior mean of a
    Uniform(0, 1) latent site by Monte Carlo."""
    from dataclasses import dataclass

    @dataclass
    class PriorMean(Method):
        name = "prior_mean"
        draws: int = 4000

        def fit(self, exp, context=None):
            import jax
            from numpyro.infer import Predictive

            draws = Predictive(exp.model, num_samples=self.draws)(jax.random.PRNGKey(exp.seed), exp.data)
            mean = float(draws["latent_fairness"].mean())
            return FitOutput(method=self.name, scalars={"prior_mean": mean}, line=f"mean={mean:.3g}", key_derivation="")

    import sys
    import types

    module = types.ModuleType("prior_mean_method")
    module.PriorMean = PriorMean
    PriorMean.__module__ = module.__name__
    sys.modules[module.__name__] = module
    try:
        cfg, _ = runner.compose(["model=coin"])
        # its own node, as its YAML file gives it (svi's node holds SVI's settings: steps, select, ...)
        cfg.inference = OmegaConf.create({"_target_": "prior_mean_method.PriorMean", "draws": 8000})
        exp = runner.build(cfg)
        assert exp.method == "prior_mean" and exp.inference.draws == 8000
        assert runner.fit(exp).scalars["prior_mean"] == pytest.approx(0.5, abs=0.02)  # Uniform(0, 1)
    finally:
        del sys.modules[module.__name__]


def test_a_users_method_settings_are_type_checked(monkeypatch):
    """Typed dataclass fields are checked before the method is built: `draws=abc` is one line
    (the user's file declares nothing but its annotations; tests/unit/test_schema.py: the ranges)."""
    import sys
    import types
    from dataclasses import dataclass

    @dataclass
    class Sampler(Method):
        name = "sampler"
        draws: int = 10
        scale: float = 1.0
        kind: str = "prior"
        on: bool = True

    module = types.ModuleType("sampler_method")
    module.Sampler, Sampler.__module__ = Sampler, "sampler_method"
    monkeypatch.setitem(sys.modules, "sampler_method", module)

    def built(**settings):
        return from_config(OmegaConf.create({"_target_": "sampler_method.Sampler", **settings}))

    assert built(draws=5, scale=2).scale == 2  # an int is a fine float
    for bad, message in [(dict(draws="abc"), "inference.draws must be an integer, got 'abc'"),
                         (dict(draws=True), "inference.draws must be an integer, got True"),
                         (dict(scale="x"), "inference.scale must be a number, got 'x'"),
                         (dict(kind=3), "inference.kind must be a string, got 3"),
                         (dict(on="yes"), "inference.on must be true or false, got 'yes'")]:
        with pytest.raises(ConfigError) as e:
            built(**bad)
        assert str(e.value) == message
