"""Install and extend: runner as an installed tool.

- The wheel installs into a new venv and `runner model=coin` fits from an empty folder; the wheel
  holds only the `runner` package (no top-level models/guides/conf), so a user's own `models/`
  package neither shadows nor is shadowed by runner's.
- A user's config folder, the Hydra way: `--config-dir myconf` adds myconf/model/*.yaml as
  `model=` options, in `--help` and in bash tab completion.
- A package ships a model and its config through Hydra's plugin mechanism (a SearchPathPlugin
  under `hydra_plugins`): examples/runner_plugin_example, installed into the new venv, is
  selected by name and fits its conjugate posterior.

Needs PyPI (or a configured index): `pip install .` into a new venv fetches runner's dependencies
(about 1.3 GB without the optional extras, kept in pip's cache between runs; 55 s here from a local mirror), and `pip wheel`
its build backend. The module's tests share that venv: one xdist group, one install per run.
"""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, read_runs, run_cli

EXAMPLE = ROOT / "examples" / "runner_plugin_example"
PROJECT_PY = sys.executable
PROJECT_BIN = Path(sys.executable).parent  # the project venv's `runner` console script
#: one worker runs the module (one install of the venv per run); the install's minutes count
#: toward the deadline of whichever test sets the venv up first
pytestmark = [pytest.mark.xdist_group("install"), pytest.mark.timeout(1800)]


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, **extra}


def _run(cmd, cwd, timeout=300, **env):
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=_env(**env), capture_output=True,
                          text=True, timeout=timeout)


def _ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _model_options(help_text: str) -> list[str]:
    """The options of the `model:` line of `runner --help`."""
    line = next(ln for ln in help_text.splitlines() if ln.startswith("model:"))
    return [o.strip() for o in line.split(":", 1)[1].split(",")]


# ---------------------------------------------------------------------------------- the wheel


def checkout_copy(tmp: Path) -> Path:
    """What `pip install .` reads of this checkout (pyproject.toml, README.md, runner/,
    hydra_plugins/), copied: pip builds in the folder it is given and leaves build/ and
    *.egg-info there."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("runner", "hydra_plugins"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return src


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel of this checkout, built from a copy (pip's setuptools build would leave build/
    and *.egg-info in the checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = checkout_copy(tmp)
    _ok(_run([PROJECT_PY, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp / "dist", src], cwd=tmp))
    (whl,) = (tmp / "dist").glob("runner-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A new venv (`python -m venv`, its own pip) and, in the checkout, `pip install .` exactly as
    the README says: runner and every dependency from the package index (pip's configured index,
    PyPI by default), nothing borrowed from the project's venv. About 1.3 GB; pip's own cache
    (~/.cache/pip, or PIP_CACHE_DIR) keeps the downloaded wheels for the next run. Here (the index
    a local mirror plus PyPI) it took 90 s; from PyPI with a cold cache expect minutes."""
    tmp = tmp_path_factory.mktemp("venv")
    src = checkout_copy(tmp)
    venv = tmp / "venv"
    _ok(_run([PROJECT_PY, "-m", "venv", venv], cwd=tmp))
    _ok(_run([venv / "bin" / "python", "-m", "pip", "install", "-q", "."], cwd=src, timeout=1500))
    return venv


def test_wheel_holds_the_runner_package_and_its_configs(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    # runner, and its Hydra plugins in the hydra_plugins namespace package (no __init__.py of its own:
    # other distributions' plugins live beside them)
    assert tops == {"runner", "hydra_plugins", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}, tops
    assert "hydra_plugins/__init__.py" not in names and {n.split("/")[1] for n in names if n.startswith("hydra_plugins/")} == {
        p.name for p in (ROOT / "hydra_plugins").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert not [n for n in names if n.startswith(("models/", "guides/", "conf/"))]
    assert "runner/conf/config.yaml" in names
    assert {"runner/models/__init__.py", "runner/guides/__init__.py"} <= set(names)
    # every config of the source tree ships (a new conf/ subfolder must be in package-data)
    conf = {p.relative_to(ROOT).as_posix() for p in (ROOT / "runner" / "conf").rglob("*.yaml")}
    assert conf - set(names) == set()
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "runner = runner.__main__:cli" in entry_points


def test_installed_runner_fits_from_an_empty_folder(venv, tmp_path):
    """The README's two lines: `pip install .` (the fixture), then `runner model=coin steps=200` from
    an empty folder; the venv holds every pinned dependency at its pin, and nothing of the checkout."""
    import re
    import tomllib

    py = venv / "bin" / "python"
    where = _ok(_run([py, "-c", "import runner; print(runner.__file__)"], cwd=tmp_path)).stdout.strip()
    assert Path(where).is_relative_to(venv), where  # the installed copy, not the checkout's
    check = _run([py, "-m", "pip", "check"], cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    pins = dict(re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", r).groups()
                for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    versions = "import importlib.metadata as m, json, sys; print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))"
    got = json.loads(_ok(_run([py, "-c", versions, *pins], cwd=tmp_path)).stdout)
    assert got == pins

    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _ok(_run([venv / "bin" / "runner", "model=coin", "steps=200"], cwd=empty))
    assert "final_loss" in proc.stdout
    _, runs = read_runs(f"sqlite:///{empty}/mlflow.db")
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert runs[0].data.tags["model"] == "coin"


def test_an_engine_of_an_extra_that_is_not_installed_is_one_line_naming_it(venv, tmp_path):
    """`pip install .` brings no optional engine (Ray, Optuna, submitit, JAXopt): choosing one is one
    line naming its extra, exit 2, before anything is created; a run that needs none says nothing
    about them (no Hydra plugin-scan warning from runner's Ray or SLURM launcher modules)."""
    py = venv / "bin" / "python"
    missing = _run([py, "-c", "import importlib.util as u; print([m for m in ('ray', 'optuna', 'submitit', 'jaxopt') "
                    "if u.find_spec(m)])"], cwd=tmp_path)
    assert missing.stdout.strip() == "[]", missing.stdout  # the default install has none of them
    for args, extra, what in ((["-m", "hydra/launcher=ray", "seed=0,1"], "ray", "hydra/launcher=ray needs Ray"),
                              (["-m", "hydra/sweeper=optuna", "optim.lr=interval(0.01, 0.1)"], "optuna",
                               "hydra/sweeper=optuna needs Optuna"),
                              (["-m", "hydra/launcher=slurm", "seed=0,1"], "slurm", "hydra/launcher=slurm needs submitit"),
                              (["optim=lbfgs", "guide=autodelta"], "lbfgs", "optim=lbfgs needs JAXopt's L-BFGS")):
        proc = _run([venv / "bin" / "runner", "model=coin", "steps=10", *args], cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines() == [
            f"runner: error: {what}, an optional part of runner: pip install 'runner[{extra}]' (or 'runner[all]')"]
        assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "multirun").exists()
    # a config file of the user's that uses it: the same line from where it is built
    (tmp_path / "conf" / "optim").mkdir(parents=True)
    (tmp_path / "conf" / "optim" / "mylbfgs.yaml").write_text("_target_: runner.optim.lbfgs\nhistory_size: 5\n")
    proc = _run([venv / "bin" / "runner", "--config-dir", "conf", "optim=mylbfgs", "model=coin", "steps=10",
                 "guide=autodelta", "tracking=none"], cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        "runner: error: optim=lbfgs needs JAXopt's L-BFGS, an optional part of runner: pip install 'runner[lbfgs]' "
        "(or 'runner[all]')"), proc.stderr[-2000:]
    ok = _ok(_run([venv / "bin" / "runner", "model=coin", "steps=10", "tracking=none"], cwd=tmp_path))
    assert "warn" not in ok.stderr.lower() and "error" not in ok.stderr.lower(), ok.stderr


def test_a_users_own_models_guides_and_conf_do_not_shadow_runners(venv, tmp_path):
    """`python -m` puts the current folder first on sys.path: a user's own `models`, `guides`
    (here: packages that fail on import) and `conf/` must not be what runner loads."""
    marker = tmp_path / "imported.txt"
    for pkg in ("models", "guides"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text(
            f"open({str(marker)!r}, 'a').write('{pkg}\\n')\nraise ImportError('the user\\'s own {pkg}')\n")
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "config.yaml").write_text("defaults: [{model: broken}]\n")
    _ok(_run([venv / "bin" / "python", "-m", "runner", "model=coin", "steps=200"], cwd=tmp_path))
    assert not marker.exists(), marker.read_text()
    _, runs = read_runs(f"sqlite:///{tmp_path}/mlflow.db")
    assert [r.info.status for r in runs] == ["FINISHED"]


# ------------------------------------------------------------------- the user's --config-dir

MYCOIN = """\
# @package _global_
# the built-in coin model under a name of the user's own
defaults:
  - override /data: coin
  - override /loss: trace
  - override /optim: adam
model:
  _target_: runner.models.coin.Coin
steps: 10000
hints: {lr: 0.0005}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A user's project folder with its own config folder myconf/."""
    tmp = tmp_path_factory.mktemp("project")
    (tmp / "myconf" / "model").mkdir(parents=True)
    (tmp / "myconf" / "model" / "mycoin.yaml").write_text(MYCOIN)
    return tmp


def test_config_dir_model_fits(project):
    uri = f"sqlite:///{project}/fit.db"
    _ok(run_cli(["--config-dir", "myconf", "model=mycoin", "steps=100", f"tracking.uri={uri}",
                 f"hydra.run.dir={project}/run"], cwd=project))
    _, runs = read_runs(uri)
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert runs[0].data.tags["model"] == "mycoin"
    assert runs[0].data.params["steps"] == "100"


def test_config_dir_models_are_listed_in_help(project):
    proc = _ok(run_cli(["--config-dir", "myconf", "--help"], cwd=project))
    assert "mycoin" in _model_options(proc.stdout)
    assert {"coin", "gmm"} <= set(_model_options(proc.stdout))
    assert "mycoin" not in _model_options(_ok(run_cli(["--help"], cwd=project)).stdout)


def _bash_complete(line: str, cwd, bin_dir) -> list[str]:
    """What bash offers for `line` + TAB after `eval "$(runner -sc install=bash)"`: Hydra's own
    completion function, called as bash's programmable completion calls it."""
    script = r'''
eval "$(runner -sc install=bash)"
COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}
read -r -a words <<< "$COMP_LINE"
COMP_CWORD=$(( ${#words[@]} - 1 )); [[ "$COMP_LINE" == *" " ]] && COMP_CWORD=${#words[@]}
hydra_bash_completion
printf '%s\n' "${COMPREPLY[@]}"
'''
    proc = _ok(_run(["bash", "-c", script, "complete", line], cwd=cwd,
                    PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"))
    return proc.stdout.split()


needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="bash completion needs bash")


@needs_bash
def test_config_dir_models_in_tab_completion(project):
    # the query itself, run with the flag
    query = _ok(_run([PROJECT_PY, "-m", "runner", "--config-dir", "myconf", "-sc", "query=bash"], cwd=project,
                     COMP_LINE="runner model="))
    assert "model=mycoin" in query.stdout.split()
    # bash: the search path given on the line itself, Hydra's other spelling of --config-dir
    offered = _bash_complete("runner hydra.searchpath=[file://myconf] model=", project, PROJECT_BIN)
    assert "model=mycoin" in offered and "model=coin" in offered
    offered = _bash_complete("runner hydra.searchpath=[file://myconf] model=myc", project, PROJECT_BIN)
    assert offered == ["model=mycoin"]


@needs_bash
def test_config_dir_on_the_line_in_tab_completion(project):
    """Hydra's bash function runs `runner -sc query=bash` without the line's --config-dir;
    runner/__main__.py passes it on to the query."""
    offered = _bash_complete("runner --config-dir myconf model=", project, PROJECT_BIN)
    assert "model=mycoin" in offered and "model=coin" in offered


# ------------------------------------------------ a package shipping models: SearchPathPlugin


@pytest.fixture(scope="module")
def plugin_venv(venv, tmp_path_factory):
    """The test venv with examples/runner_plugin_example installed (from a copy: the build
    leaves build/ and *.egg-info behind)."""
    tmp = tmp_path_factory.mktemp("plugin")
    src = tmp / "runner_plugin_example"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info"))
    _ok(_run([PROJECT_PY, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "-q", src],
             cwd=tmp))
    return venv


def test_plugin_package_models_are_listed(plugin_venv, tmp_path):
    proc = _ok(_run([plugin_venv / "bin" / "runner", "--help"], cwd=tmp_path))
    assert {"normal_mean", "coin", "gmm"} <= set(_model_options(proc.stdout))
    # the package ships no hydra_plugins/__init__.py: `hydra_plugins` stays one namespace package
    # across distributions (runner's launchers' plugins are found beside it)
    code = ("import hydra_plugins, pkgutil; print(hydra_plugins.__file__); "
            "print(' '.join(sorted(m.name for m in pkgutil.iter_modules(hydra_plugins.__path__))))")
    file, found = _ok(_run([plugin_venv / "bin" / "python", "-c", code], cwd=tmp_path)).stdout.splitlines()
    assert file == "None"  # a namespace package: no distribution's __init__.py
    assert {"runner_example_models_searchpath", "runner_ray", "runner_slurm", "runner_optuna_sweeper",
            "hydra_joblib_launcher"} <= set(found.split()), found
    assert "hydra_ray_launcher" not in found.split()  # the `ray` extra: not in the default install


def test_plugin_package_model_fits_its_conjugate_posterior(plugin_venv, tmp_path):
    """model=normal_mean (a plain NumPyro function, y ~ Normal(mu, 1), mu ~ Normal(0, 10)) on the
    data file the package ships. The posterior is Normal with precision n + 1/100 and mean
    sum(y) / (n + 1/100); AutoNormal holds it exactly, so its loc and scale converge to it.

    Tolerance: 0.25 posterior sd for the loc, 25% for the scale. With the model's Adam + cosine
    decay (lr 0.05 -> 0) and 300 steps the single-particle ELBO's gradient noise leaves the loc
    within 0.13 posterior sd of the analytic mean over seeds 0-5 (1000 steps: 0.11) and the scale
    within 10% of it; a constant learning rate left errors up to 0.6 sd.
    """
    py = plugin_venv / "bin" / "python"
    data = _ok(_run([py, "-c", "import importlib.resources as r; "
                     "print(r.files('runner_example_models') / 'data' / 'normal_mean.json')"], cwd=tmp_path)).stdout.strip()
    assert Path(data).is_relative_to(plugin_venv)
    empty = tmp_path / "empty"
    empty.mkdir()
    _ok(_run([plugin_venv / "bin" / "runner", "model=normal_mean", "data=json", f"data.path={data}", "steps=300",
              f"hydra.run.dir={tmp_path}/run"], cwd=empty))
    _, runs = read_runs(f"sqlite:///{empty}/mlflow.db")
    assert [r.info.status for r in runs] == ["FINISHED"]

    y = np.asarray(json.loads(Path(data).read_text())["y"], dtype=float)
    precision = len(y) + 1 / 10.0**2
    mean, sd = y.sum() / precision, precision**-0.5
    params = json.loads((tmp_path / "run" / "params.json").read_text())
    assert abs(params["mu_auto_loc"] - mean) < 0.25 * sd, (params, mean, sd)
    assert params["mu_auto_scale"] == pytest.approx(sd, rel=0.25), (params, sd)


def test_readme_plugin_commands(plugin_venv, tmp_path):
    """The README's own lines, as typed after installing the example package: write scratch/y.json,
    run `runner model=normal_mean data.path=scratch/y.json` from an empty folder; mu's posterior is
    analytic."""
    env = _env()
    env["PATH"] = f"{plugin_venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    readme = (ROOT / "README.md").read_text()
    lines = ["mkdir -p scratch && echo '{\"y\": [2.8, 3.3, 1.2, 3.4, 2.9]}' > scratch/y.json",
             "runner model=normal_mean data.path=scratch/y.json"]
    for line in lines:
        assert f"$ {line}" in readme, line
        proc = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    _, runs = read_runs(f"sqlite:///{tmp_path}/mlflow.db")
    assert [r.info.status for r in runs] == ["FINISHED"]
    y = np.array([2.8, 3.3, 1.2, 3.4, 2.9])
    precision = len(y) + 1 / 10.0**2
    mean, sd = y.sum() / precision, precision**-0.5
    m = runs[0].data.metrics
    assert abs(m["posterior/mu/mean"] - mean) < 0.25 * sd and m["posterior/mu/std"] == pytest.approx(sd, rel=0.25)
