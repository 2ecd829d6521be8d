"""Adding an inference method is one module and one YAML file, from the user's own folder: the
fixture project tests/fixtures/my_method (importance.py, conf/inference/importance.yaml) is
selected with `--config-dir conf inference=importance`, as the README shows, and its run is a
full runner run: MLflow record, tags, summary line, exit code. The coin's posterior is Beta(13, 9)."""
import re
import shutil

import pytest
from conftest import ROOT, fit_cli, run_cli

FIXTURE = ROOT / "tests" / "fixtures" / "my_method"
COMMAND = "python -m runner --config-dir conf model=coin inference=importance"


@pytest.fixture
def project(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "project", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "project"


def test_a_method_from_the_users_folder_is_a_full_run(project):
    args = COMMAND.split()[3:]
    proc, client, run, run_dir = fit_cli(project, *args)
    assert re.search(r"runner: coin/importance ess=\d+ latent_fairness=0\.59\d* run_id=", proc.stdout)
    m = run.data.metrics
    assert m["posterior/latent_fairness/mean"] == pytest.approx(13 / 22, abs=0.01)  # Beta(13, 9)
    assert m["ess"] > 1000
    tags = run.data.tags
    assert tags["inference"] == "importance" and tags["model"] == "coin" and "guide" not in tags
    assert run.data.params["inference._target_"] == "importance.Importance"
    assert run.data.params["inference.draws"] == "20000"
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "metrics.json", "latents.json", "model_source"} <= arts


def test_its_settings_are_overrides_and_are_checked_like_any_other(project):
    proc, _, run, _ = fit_cli(project, "--config-dir", "conf", "model=coin", "inference=importance",
                              "inference.draws=500", run="small")
    assert run.data.params["inference.draws"] == "500"
    bad = run_cli(["--config-dir", "conf", "model=coin", "inference=importance", "inference.draws=abc",
                   f"tracking.uri=sqlite:///{project}/mlflow.db"], cwd=project)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "inference" in bad.stderr


def test_the_readme_shows_this_method_verbatim():
    readme = (ROOT / "docs" / "methods.md").read_text()  # the README's page on inference methods
    assert (FIXTURE / "importance.py").read_text() in readme
    assert (FIXTURE / "conf" / "inference" / "importance.yaml").read_text() in readme
    assert f"$ {COMMAND}\n" in readme
