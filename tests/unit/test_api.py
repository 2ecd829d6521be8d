"""runner's Python API (runner/api.py, re-exported by the package): compose, build, fit and run
the CLI's configs in-process, errors as exceptions (never SystemExit), and the README's
notebook example run as written."""
import re
import sys

import numpy as np
import pytest
from conftest import ROOT

import runner
from runner.errors import ConfigError, RunFailed


def test_compose_build_fit_reproduce_the_coin_posterior():
    """The Beta guide on 12 heads / 8 tails: the analytic posterior is Beta(13, 9)."""
    cfg, choices = runner.compose(["model=coin", "guide=manual", "steps=3000", "optim.lr=0.005"])
    assert choices["model"] == "coin" and choices["guide"] == "manual"
    exp = runner.build(cfg)
    assert exp.method == "svi" and exp.inference.steps == 3000 and exp.restarts == 1
    assert not exp.inference.deterministic  # the Beta guide samples
    out = runner.fit(exp)
    assert isinstance(out, runner.FitOutput) and out.method == "svi" and len(out.extras.results) == 1
    a, b = out.params["alpha_q"], out.params["beta_q"]
    assert abs(a / (a + b) - 13 / 22) < 0.02  # the posterior mean
    draws = out.draws["latent_fairness"]
    assert draws.shape == (1, 2000) and abs(draws.mean() - 13 / 22) < 0.02  # one chain of the guide's draws
    assert out.latents["latent_fairness"] == pytest.approx(np.median(draws))


def test_build_refuses_in_one_exception_not_an_exit():
    cfg, _ = runner.compose(["model=coin", "steps=0"])
    with pytest.raises(ConfigError, match="steps must be a positive integer, got 0"):
        runner.build(cfg)
    cfg, _ = runner.compose(["model=coin", "inference=em"])
    with pytest.raises(ConfigError, match="inference=em has no updates for model 'coin'"):
        runner.build(cfg)


def test_run_raises_config_error_and_leaves_nothing(tmp_path):
    with pytest.raises(ConfigError, match="optim=lbfgs needs a deterministic objective"):
        runner.run(["model=coin", "guide=manual", "optim=lbfgs", "tracking=none"], run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before any file


def test_run_with_tracking_none_writes_the_run_directory(tmp_path, capsys):
    out = runner.run(["model=coin", "guide=manual", "tracking=none", "steps=2000", "optim.lr=0.005"],
                     run_dir=tmp_path / "run")
    assert out.run_id is None  # no store
    files = {p.name for p in out.run_dir.iterdir()}
    assert {"config.yaml", "metrics.json", "params.json", "latents.json", "summary.json", "plots"} <= files
    printed = capsys.readouterr().out
    assert re.search(r"runner: coin/manual final_loss=\S+ best_restart=0/1 outputs=", printed)
    assert "mlflow ui" not in printed  # nothing to look at in MLflow
    assert out.final_loss == pytest.approx(out.scalars["final_loss"])


def test_a_diverging_run_raises_run_failed(tmp_path):
    with pytest.raises(RunFailed, match="all trained restarts diverged") as e:
        runner.run(["model=coin", "guide=manual", "tracking=none", "steps=50", "optim.lr=1e30"],
                   run_dir=tmp_path / "run", quiet=True)
    assert e.value.code == 1
    assert (tmp_path / "run" / "metrics.json").is_file()  # what was finite is kept


def test_readme_notebook_example_runs_as_written(tmp_path, monkeypatch, capsys):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## From Python (notebooks)"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    final, _ = printed[0].split(" ", 1)
    assert float(final) == pytest.approx(14.8, abs=0.3)  # the coin's final ELBO loss (README: 14.79)
    assert (tmp_path / "runs" / "coin" / "metrics.json").is_file()
    assert printed[-1].endswith("runs/coin")


@pytest.mark.parametrize("overrides, method, chains", [
    (["model=gmm", "inference=em", "restarts=2"], "em", None),
    (["model=gmm", "inference=nuts", "inference.warmup=20", "inference.samples=30", "inference.chains=2"], "nuts", 2),
    (["model=gmm", "steps=20"], "svi", 1),
])
def test_fit_returns_one_type_for_every_method(overrides, method, chains):
    """The notebook's runner.fit: a FitOutput whatever the method; draws by site with a chain axis
    (none for EM, whose parameters are not the model's sites), scalars with a final loss or the
    method's own, the summary line's numbers."""
    out = runner.fit(runner.build(runner.compose(overrides)[0]))
    assert isinstance(out, runner.FitOutput) and out.method == method and out.line
    if chains is None:
        assert out.draws == {} and np.isfinite(out.scalars["avg_loglik"]) and out.final_loss == -out.scalars["avg_loglik"]
    else:
        assert out.draws["locs"].shape[:1] == (chains,) and out.draws["locs"].shape[-1] == 2
    assert out.markov == (method == "nuts") and (method == "nuts" or np.isfinite(out.final_loss))


def test_fit_config_returns_each_methods_result():
    exp, result = runner.fit_config(["model=gmm", "inference=em", "restarts=2"])
    assert exp.method == "em" and result.final_loglik.shape == (2,)
    assert np.isfinite(result.final_loglik).all()


def test_the_package_exposes_the_api_lazily():
    assert set(runner.API) <= set(dir(runner.api))
    with pytest.raises(AttributeError):
        runner.no_such_name  # noqa: B018
    assert "runner.api" in sys.modules  # imported on first use above


def test_the_objective_of_replicates_is_their_mean_final_loss(tmp_path):
    """A run of replicates records final_loss = the replicates' mean, and returns that (what Hydra
    hands a sweeper), not its best replicate's."""
    out = runner.run(["model=coin", "guide=manual", "steps=200", "replicates=3", "tracking=none"],
                     run_dir=tmp_path / "run", quiet=True)
    finals = [r.final_loss for r in out.output.extras.results]
    assert out.final_loss == pytest.approx(np.mean(finals)) == pytest.approx(out.scalars["final_loss_mean"])
    assert len(set(finals)) == 3 and out.final_loss != min(finals)


@pytest.mark.parametrize("call, message", [
    (lambda: runner.compose(["stepz=1"]), "unknown key 'stepz'"),
    (lambda: runner.compose(["model=gmx"]), "unknown model 'gmx': choose one of"),
    (lambda: runner.compose(["model=[a,"]), "cannot read the override 'model=[a,': no viable alternative"),
    (lambda: runner.compose(["seed=0,1", "model=coin"]), "seed=0,1 is a sweep: the Python API runs one config"),
    (lambda: runner.run(["seed=0,1", "model=coin", "tracking=none"]), "seed=0,1 is a sweep"),
    (lambda: runner.compose("model=coin"), "overrides must be a list of strings"),
    # Hydra's lexer: "LexerNoViableAltException: --config-dir"
    (lambda: runner.run(["--config-dir", "conf", "model=coin", "tracking=none"]),
     "--config-dir is a command-line option, not an override: the Python API takes overrides only (give its "
     "folder as config_dir=...)"),
    (lambda: runner.compose(["-m", "seed=0"]), "-m is a command-line option, not an override"),
    (lambda: runner.compose(["model=coin"], config_dir="/no/such/folder"), "config_dir /no/such/folder is not a folder"),
    (lambda: runner.build(runner.compose(["model=coin", "+x=${oc.env:RUNNER_NO_SUCH_VARIABLE}"])[0]),
     "RUNNER_NO_SUCH_VARIABLE"),
])
def test_every_mistake_in_what_the_api_is_given_is_a_config_error(call, message):
    """Hydra's and OmegaConf's own exceptions used to reach the caller (issue 28)."""
    from runner.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        call()
    assert message in str(e.value) and len(str(e.value).splitlines()) == 1
