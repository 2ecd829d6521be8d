"""Issue 13, a real trust boundary, end to end: runner.predict and the pyfunc model resolve a
stored `_target_` / `model.fn` only if the resolved object is runner's own (its components), a
Hydra plugin package's or a package the reader trusts; each bypass proves that nothing ran: its
payload (`touch <marker>`) leaves no marker file. (The rule itself, in-process:
tests/unit/test_trust.py.)"""
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT, read_runs, run_cli
from omegaconf import OmegaConf

from runner.errors import ConfigError


def test_hydra_plugin_packages_are_trusted(tmp_path):
    """A package that registers its configs through a Hydra SearchPathPlugin (hydra_plugins
    namespace) is trusted for stored configs (a fresh process: Hydra scans plugins once)."""
    plugin = tmp_path / "hydra_plugins" / "trust_probe_searchpath"
    plugin.mkdir(parents=True)
    (plugin / "__init__.py").write_text(textwrap.dedent("""\
        from hydra.plugins.search_path_plugin import SearchPathPlugin

        class P(SearchPathPlugin):
            def manipulate_search_path(self, search_path):
                search_path.append(provider="probe", path="pkg://trust_probe_pkg.conf")
        """))
    code = "from runner.trust import trusted_roots; print(sorted(trusted_roots()))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['runner', 'trust_probe_pkg']"


# --- end to end: a real run, its stored config replaced ---------------------------------------

@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One real run with the CLI (gmm, with data: its pyfunc model is logged)."""
    tmp = tmp_path_factory.mktemp("trust")
    uri = f"sqlite:///{tmp}/mlflow.db"
    proc = run_cli(["model=gmm", "guide=autodelta", "steps=5", "restarts=2", f"tracking.uri={uri}",
                    f"hydra.run.dir={tmp}/run"], cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, (run,) = read_runs(uri)
    return uri, client, run, tmp


def copy_with_config(logged, tmp_path, edit) -> str:
    """A copy of the logged run (tags and artifacts), then its config.yaml artifact overwritten in
    place (same run, same path) by `edit(the genuine config)`, as whoever can write the store can."""
    uri, client, run, _ = logged
    src = tmp_path / "src"
    src.mkdir()
    for name in ("config.yaml", "latents.json", "params.json"):
        client.download_artifacts(run.info.run_id, name, str(src))
    copy = client.create_run(run.info.experiment_id, tags=run.data.tags)
    client.log_artifacts(copy.info.run_id, str(src))
    cfg = OmegaConf.load(src / "config.yaml")
    edit(cfg)
    bad = tmp_path / "bad" / "config.yaml"
    bad.parent.mkdir()
    bad.write_text(OmegaConf.to_yaml(cfg))
    client.log_artifact(copy.info.run_id, str(bad))
    client.set_terminated(copy.info.run_id)
    return copy.info.run_id


def predict(logged, run_id, tmp_path, *extra):
    from runner.predict import main

    uri = logged[0]
    return main([f"run_id={run_id}", f"tracking.uri={uri}", f"out={tmp_path}/predictions.json", *extra])


def touch(marker):
    return {"_target_": "os.system", "_args_": [f"touch {marker}"]}


PAYLOADS = {  # name: (edit of the stored config, given the marker path; what the one line says)
    "numpyro os.system as data": (lambda c, m: c.update(data={**touch(m), "_target_": "numpyro.infer.mcmc.os.system"}),
                                  "data._target_=numpyro.infer.mcmc.os.system in a stored config is not trusted"),
    "runner...np.f2py.os.system as model": (
        lambda c, m: c.update(model={**touch(m), "_target_": "runner.models.gmm.np.f2py.os.system"}),
        "model._target_=runner.models.gmm.np.f2py.os.system in a stored config resolves to posix.system"),
    "a hydra callback": (lambda c, m: c.update(hydra={"callbacks": {"x": touch(m)}}),
                         "hydra.callbacks.x._target_=os.system in a stored config is not trusted"),
    "model.fn os.system": (
        lambda c, m: c.update(model={"_target_": "runner.models.function.FunctionModel", "fn": "os.system"}),
        "model.fn=os.system in a stored config is not trusted"),
    "an oc.create interpolation": (
        lambda c, m: c.update(data="${oc.create:{_target_: os.system, _args_: ['touch " + str(m) + "']}}"),
        "data=${oc.create:"),
    "runner's manual guide builder as a gadget": (  # subprocess.call(<the dict's keys>) without the guard
        lambda c, m: c.update(data={"_target_": "runner.guides.manual.manual", "variant": "a",
                                    "model": {"sh": 1, "-c": 1, f"touch {m}": 1,
                                              "manual_guides": {"a": "subprocess.call"}}}),
        "guide=manual needs a runner model"),
}


@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_a_stored_config_runs_nothing_untrusted(logged, tmp_path, capsys, payload):
    edit, says = PAYLOADS[payload]
    marker = tmp_path / "marker"
    run_id = copy_with_config(logged, tmp_path, lambda c: edit(c, marker))
    capsys.readouterr()  # MLflow's download progress while copying
    assert predict(logged, run_id, tmp_path) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("runner.predict: error: ") and says in lines[0], lines
    assert not marker.exists()
    assert not (tmp_path / "predictions.json").exists()


def test_a_stored_user_function_is_used_only_when_trusted(logged, tmp_path, capsys, monkeypatch):
    """model.fn naming a module on the path: refused (never imported) until the reader trusts it."""
    marker = tmp_path / "imported"
    (tmp_path / "trust_probe_user.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef f(x=None):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("RUNNER_TRUST", raising=False)
    run_id = copy_with_config(logged, tmp_path, lambda c: c.update(
        model={"_target_": "runner.models.function.FunctionModel", "fn": "trust_probe_user.f"}))
    capsys.readouterr()
    assert predict(logged, run_id, tmp_path) == 2
    err = capsys.readouterr().err
    assert "model.fn=trust_probe_user.f in a stored config is not trusted" in err and "trust=trust_probe_user" in err
    assert not marker.exists() and "trust_probe_user" not in sys.modules
    predict(logged, run_id, tmp_path, "trust=trust_probe_user")  # trusted: imported (what follows is its own)
    assert marker.exists()
    monkeypatch.delitem(sys.modules, "trust_probe_user", raising=False)


def test_the_untouched_run_still_predicts(logged, tmp_path, capsys):
    import json

    _, _, run, _ = logged
    assert predict(logged, run.info.run_id, tmp_path) == 0
    out = json.loads((tmp_path / "predictions.json").read_text())
    assert out["run_id"] == run.info.run_id and out["n"] > 0 and len(out["assignment"]) == out["n"]


def test_the_pyfunc_model_refuses_an_untrusted_config(logged, tmp_path, monkeypatch, tracking_uri):
    """mlflow.pyfunc.load_model of the run's model: loads and predicts as logged; once its
    config.yaml (model artifact artifacts/config.yaml) is replaced, load_model raises and the
    payload never runs. (Loading any pyfunc model runs its code, pyfunc_code.py: see README.)"""
    import mlflow
    import numpy as np

    uri, client, run, _ = logged
    monkeypatch.delenv("RUNNER_TRUST", raising=False)
    tracking_uri(uri)
    good = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert good.predict(np.array([0.3, 10.6], np.float32)).shape == (2,)

    (model,) = client.search_logged_models([run.info.experiment_id])
    paths = {a.path for a in client.list_logged_model_artifacts(model.model_id, "artifacts")}
    assert "artifacts/config.yaml" in paths, paths
    marker = tmp_path / "marker"
    cfg = OmegaConf.load(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path)))
    cfg.model = touch(marker)
    bad = tmp_path / "bad"
    (bad / "artifacts").mkdir(parents=True)
    (bad / "artifacts" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    client.log_model_artifacts(model.model_id, str(bad))
    with pytest.raises(ConfigError, match="model._target_=os.system in a stored config is not trusted"):
        mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert not marker.exists()


def test_the_users_own_command_uses_its_target(tmp_path):
    """What the user types is their own code, as in Hydra: the target they name is used."""
    marker = tmp_path / "marker"
    proc = run_cli(["model=coin", "data=none", "+data._target_=os.system", f"+data._args_=['touch {marker}']",
                    f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert marker.exists(), proc.stderr  # (the coin model then refuses os.system's exit status as data)


def test_predict_help_names_trust():
    out = subprocess.run([sys.executable, "-m", "runner.predict", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "trust=" in out.stdout and "RUNNER_TRUST" in out.stdout
