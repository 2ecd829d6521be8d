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
