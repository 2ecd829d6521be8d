"""Bad input ends before the fit, in one ConfigError line (the CLI: exit 2): the cases that used
to end in a traceback after JAX started, or worse, in a silently wrong run."""
import pytest

import runner
from runner.errors import ConfigError


@pytest.mark.parametrize("overrides, message", [
    (["model=gmm", "model.K=0"], "model.K must be a positive integer (the mixture's components), got 0"),
    (["model=gmm", "model.K=-1"], "model.K must be a positive integer"),
    (["model=gmm", "model.K=1", "guide=manual"], "guide=manual (the GMM full guide) learns assignment_probs"),
    (["model=bmm", "model.K=1"], "model.K must be an integer >= 2"),
    (["model=gmm", f"seed={2**63}"], "seed must be an integer from 0 to 2147483647"),
    (["model=gmm", f"seed={2**32}"], "seed must be an integer from 0 to 2147483647"),  # JAX would make it seed 0
    (["model=gmm", "seed=-1"], "seed must be an integer from 0 to 2147483647"),
    (["model=coin", "loss.num_particles=1.5"], "loss.num_particles must be a positive integer, got 1.5"),
    (["model=coin", "optim.lr=nan"], "optim.lr must be a positive finite number, got nan"),
    (["model=coin", "optim.lr=inf"], "optim.lr must be a positive finite number, got inf"),  # ran to a wrong loss
    (["model=coin", "optim.lr=-0.1"], "optim.lr must be a positive finite number, got -0.1"),
    (["model=gmm", "data=digits", "data.n=-5"], "data.n must be a positive integer or null, got -5"),  # dropped 5 rows
    (["model=gmm", "tracking.max_points_per_curve=-5"], "tracking.max_points_per_curve must be an integer >= 2 or null"),
    (["model=gmm", "tracking.max_points_per_curve=abc"], "tracking.max_points_per_curve must be an integer >= 2 or null"),
    # runner's guides' settings: NumPyro's own failures, a traceback and exit 1, before these checks
    (["model=gaussian2d", "guide=autolowrank", "guide.rank=0"],  # ZeroDivisionError in the guide's trace
     "guide.rank must be a positive integer (or null: NumPyro's default), got 0"),
    (["model=gaussian2d", "guide=autolowrank", "guide.rank=abc"], "guide.rank must be a positive integer"),
    (["model=gaussian2d", "guide=autoiaf", "guide.num_flows=0"], "guide.num_flows must be a positive integer, got 0"),
    (["model=gaussian2d", "guide=autoiaf", "guide.hidden_dims=[0]"], "guide.hidden_dims must be a list of positive integers"),
    (["model=multimodal", "guide=mixture", "guide.K=0"], "guide.K must be a positive integer (the mixture's components), got 0"),
    (["model=multimodal", "guide=mixture", "guide.init_spread=-1"], "guide.init_spread must be a number >= 0, got -1"),
    (["model=coin", "guide=autonormal", "guide.init_scale=abc"], "guide.init_scale must be a positive finite number, got 'abc'"),
    # a NaN first loss, and the advice to try jax.x64=true
    (["model=coin", "guide=autonormal", "guide.init_scale=-1"], "guide.init_scale must be a positive finite number, got -1"),
    (["model=gaussian2d", "guide=automvn", "guide.init_scale=0"], "guide.init_scale must be a positive finite number, got 0"),
])
def test_refused_before_the_fit(overrides, message):
    cfg, _ = runner.compose(overrides)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        runner.build(cfg)
    assert len(str(e.value).splitlines()) == 1


def test_complex_data_is_refused_not_cast(tmp_path):
    """A complex .npy used to lose its imaginary part without a word."""
    import numpy as np

    np.save(tmp_path / "z.npy", np.array([1 + 2j, 3 - 1j, 0.5j]))
    cfg, _ = runner.compose(["model=gmm", "data=file", f"data.path={tmp_path}/z.npy"])
    with pytest.raises(ConfigError, match=r"data .*z.npy is complex: the models take real numbers"):
        runner.build(cfg)


@pytest.mark.parametrize("samples", ["-1", "0", "many"])
def test_predict_refuses_a_bad_sample_count_before_reading_anything(samples):
    from runner.predict import parse

    with pytest.raises(ConfigError, match="samples must be a positive integer"):
        parse(["run_id=abc", f"samples={samples}", "tracking.uri=http://127.0.0.1:9"])


def test_a_guide_checks_its_settings_when_called_too():
    """The API's caller may build a guide without a config: the function says the same line."""
    from runner.guides.auto import autolowrank
    from runner.guides.mixture import automixture

    with pytest.raises(ConfigError, match=r"^guide.rank must be a positive integer"):
        autolowrank(lambda: None, rank=0)
    with pytest.raises(ConfigError, match=r"^guide.K must be a positive integer"):
        automixture(lambda: None, K=0)


def test_a_users_guide_with_the_same_setting_names_is_not_held_to_runners_ranges(tmp_path, monkeypatch):
    """guide.K, guide.rank, ... are ranged only for runner's own guides (runner/guides/): a user's
    guide function takes its settings as it means them."""
    from runner import schema

    (tmp_path / "myguides.py").write_text("def g(model, init_values=None, K=0, rank=-1):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg, _ = runner.compose(["model=coin", "guide=autonormal", "guide._target_=myguides.g", "+guide.K=0",
                             "+guide.rank=-1"])
    schema.early_guide(cfg)  # nothing refused
    cfg, _ = runner.compose(["model=coin", "guide=autonormal", "+guide.K=0"])
    with pytest.raises(ConfigError, match="guide.K must be a positive integer"):
        schema.early_guide(cfg)
