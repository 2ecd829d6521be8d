"""What a user gets wrong, through the real command: one line on stderr (`runner: error: ...`), exit
code 2, no traceback, no run left in the store. Hydra's own refusals (an unknown option or key)
and the tracking store's are the CLI's; the refusals of runner.build are tested in-process
(tests/unit/test_experiment.py, test_models.py) and a few of them here, to see them reach the
command line the same way."""

import os

import pytest
from conftest import read_runs, run_cli


def no_runs_left(tmp_path):
    """Nothing logged and nothing started: no run at all in the store, no fit in the run dir."""
    db = tmp_path / "mlflow.db"
    if db.exists():
        _, runs = read_runs(f"sqlite:///{db}")
        assert runs == []
    assert not list(tmp_path.glob("**/metrics.json"))


BAD = [  # (overrides, the one line expected on stderr after "runner: error: ")
    # Hydra's (composing the config)
    (["model=gmx"], "unknown model 'gmx': choose one of bmm, coin, fn, gaussian2d, gmm, multimodal"),
    (["guide=nope"], "unknown guide 'nope': choose one of autodelta, autoiaf, autolaplace, autolowrank, automvn, "
                     "autonormal, manual, mixture"),
    (["optim=nope"], "unknown optim 'nope': choose one of adam, adam_cosine, adamw, lbfgs, sgd"),
    (["tracking=default"], "tracking=default is called tracking=mlflow now (choose one of mlflow, none)"),  # renamed
    (["stepz=10"], "unknown key 'stepz'"),
    ([f"+{'k' * 300}=1"], f"config key '{'k' * 40}...' is 300 characters long: keys are at most 250"),
    # runner.build's (all of them: tests/unit/test_experiment.py)
    (["steps=abc"], "steps must be a positive integer, got 'abc'"),
    (["model=gmm", "loss=trace"], "model 'gmm' has enumerated discrete sites: use loss=traceenum"),
    (["data=file", "data.path={tmp}/missing.csv"], "data file not found: {tmp}/missing.csv"),
    # the user's own command is their code, as in Hydra: the target is used (here called with the
    # model's keys); configs read back from a store are held to runner.trust (tests/unit/test_trust.py)
    (["model._target_=os.system"], "cannot build model: TypeError: system() takes at most 1 keyword argument"),
    # the tracking store's
    (["tracking.uri=sqlite:///{tmp}/afile/mlflow.db"], "cannot create the tracking store sqlite:///{tmp}/afile/mlflow.db"),
    # a folder that exists and takes no new file, for root too (os.access said yes: it failed after the fit)
    *([(["tracking.uri=sqlite:////sys/mlflow.db"], "the tracking store sqlite:////sys/mlflow.db is not writable (")]
      if os.path.isdir("/sys/kernel") else []),  # sysfs: Linux
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "afile").write_text("x")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    message = message.replace("{tmp}", str(tmp_path))
    uri = [] if any(a.startswith("tracking.uri") for a in args) else [f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"]
    proc = run_cli([*args, *uri, f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"runner: error: {message}"), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    no_runs_left(tmp_path)


@pytest.mark.parametrize("folder", ["/proc/runs", "{tmp}/afile/runs"])
def test_an_output_folder_that_cannot_be_made_is_one_line(tmp_path, folder):
    """hydra.run.dir is created by Hydra before the job: a folder that cannot be made is a user's
    mistake (exit 2, one line), not a traceback."""
    (tmp_path / "afile").write_text("x")
    folder = folder.replace("{tmp}", str(tmp_path))
    proc = run_cli(["model=coin", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"hydra.run.dir={folder}"],
                   cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"runner: error: cannot write {folder}: {'Not a directory' if 'afile' in folder else 'No such file or directory'}: "
        "set hydra.run.dir (hydra.sweep.dir for -m) to a writable folder"]
    no_runs_left(tmp_path)


def test_unreachable_tracking_server_fails_fast(tmp_path):
    # fast: one refused connection is the answer, no retries (MLflow's client would retry for minutes):
    # the command must return before run_cli's timeout (TimeoutExpired fails the test)
    proc = run_cli(["model=coin", "tracking.uri=http://127.0.0.1:9"], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "runner: error: tracking server http://127.0.0.1:9 is unreachable ([Errno 111] Connection refused): "
        "start it (mlflow server ...) or set tracking.uri"]


def test_deleted_experiment_is_refused(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    client.delete_experiment(client.create_experiment("gone"))
    proc = run_cli(["model=coin", "steps=10", f"tracking.uri={uri}", "tracking.experiment=gone"], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("runner: error: experiment 'gone' is deleted")
    assert "the fit is saved in" in proc.stderr


def test_user_mistakes_are_one_line_and_exit_2(tmp_path):
    """What a user gets wrong in their own module or data, from the folder they run in: one line
    that keeps the cause (the module, the original error and where it was raised), exit 2, before
    any fit, no run left. (Every case of runner.build's: tests/unit/test_models.py.)"""
    (tmp_path / "broken.py").write_text("import numpyro\n\nraise RuntimeError('half-written module')\n")
    (tmp_path / "silent.py").write_text("def model(x, y=None):\n    raise ValueError()\n")
    (tmp_path / "d.json").write_text('{"x": [1.0, 2.0, 3.0]}')
    (tmp_path / "reg.py").write_text(
        "import numpyro, numpyro.distributions as dist\n\n\ndef model(x, y):\n"
        "    b = numpyro.sample('b', dist.Normal(0, 1))\n"
        "    with numpyro.plate('rows', len(x)):\n        numpyro.sample('y', dist.Normal(b * x, 1), obs=y)\n")
    (tmp_path / "short.json").write_text('{"x": [1.0, 2.0, 3.0], "y": [1.0, 2.0]}')
    store = f"sqlite:///{tmp_path}/m.db"
    base = ["data=json", "data.path=d.json", f"tracking.uri={store}", f"hydra.run.dir={tmp_path}/run"]
    cases = {
        ("model=fn", "model.fn=broken.model", *base):
            "model.fn=broken.model: importing broken failed: RuntimeError: half-written module (at ",
        ("model=fn", "model.fn=silent.model", "data.path=d.json", f"tracking.uri={store}"):
            "name the data format first, data=json|csv|npz|file data.path=...",
        ("model=fn", "model.fn=reg.model", "data=json", "data.path=short.json", f"tracking.uri={store}"):
            "model 'model': data 'y' has shape (2,), but site 'y' has shape (3,), plate 'rows' of 3",
    }
    for args, message in cases.items():
        proc = run_cli(list(args), cwd=tmp_path)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], (args, proc.stderr[-2000:])
        assert "Traceback" not in proc.stdout + proc.stderr
    _, runs = read_runs(store)
    assert runs == []  # refused before a run was opened


@pytest.mark.parametrize("override, message", [
    ("tracking.experiment=", "tracking.experiment is empty: name the MLflow experiment"),
    ("tracking.uri=", "tracking.uri is empty: set it to a store, e.g. sqlite:///mlflow.db"),
    ("tracking.uri=file:./mlruns", "tracking.uri=file:./mlruns is a file store, which MLflow 3 refuses"),
    ("+a$b=1", "config key 'a$b' cannot be an MLflow param name"),
])
def test_what_the_store_would_refuse_is_refused_before_the_fit(tmp_path, override, message):
    """These used to end after the fit, exit 1, with a FAILED run or a half-made store."""
    proc = run_cli(["model=coin", "steps=20", override, f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()  # no fit
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


PROPORTIONS = '''
import numpyro
import numpyro.distributions as dist


def proportions(y):
    a = numpyro.sample("a", dist.Gamma(2.0, 1.0))
    b = numpyro.sample("b", dist.Gamma(2.0, 1.0))
    with numpyro.plate("N", y.shape[0]):
        numpyro.sample("y", dist.Beta(a, b), obs=y)
'''


@pytest.mark.parametrize("method, args, tail", [
    ("nuts", ["inference=nuts"], "or inference.init=uniform|sample; run {id} is FAILED"),
    ("svi", ["guide=autonormal", "restarts=3"], "(3 of 3 trained); try jax.x64=true"),
])
def test_a_fit_that_cannot_start_is_one_line_exit_1_and_a_failed_run(tmp_path, method, args, tail):
    """A proportion of exactly 0 under a Beta likelihood: the log density is -inf or +inf (or NaN)
    wherever a and b start. NUTS's init (`Cannot find valid initial parameters`) and SVI's first
    step (NaN in every restart) are one line naming the model and the remedies, exit 1 (the fit
    had started: the run is open), and the MLflow run ends FAILED with the message, not RUNNING."""
    (tmp_path / "props.py").write_text(PROPORTIONS)
    (tmp_path / "p.json").write_text('{"y": [0.0, 0.3, 0.5, 0.9]}')
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_cli(["model=fn", "model.fn=props.proportions", "data=json", "data.path=p.json", *args,
                    f"tracking.uri={uri}", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    _, runs = read_runs(uri)
    (run,) = runs
    assert len(lines) == 1 and lines[0].startswith(
        f"runner: error: model 'proportions' cannot start inference={method}: its "), proc.stderr
    assert "jax.x64=true" in lines[0] and tail.format(id=run.info.run_id) in lines[0]
    assert run.info.status == "FAILED"
    if method == "nuts":
        assert "Cannot find valid initial parameters" in lines[0] and "cannot start inference=nuts" in run.data.tags["error"]
    else:
        assert run.data.tags["failure_step"] == "0" and "what was finite is logged" in lines[0]


def test_memory_beyond_svi_is_refused_in_one_line(tmp_path):
    """Issue 28: `model=bmm inference=em restarts=100000` grew past 12.7 GB, and `model=gmm steps=10
    posterior.samples=1000000000` past 12.8 GB after its fit. The draws are refused when the run
    is built (no run at all); EM's program when it is compiled, before it runs: its run ends
    FAILED with the line, never RUNNING."""
    import re

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    draws = run_cli(["model=gmm", "steps=10", "posterior.samples=1000000000", f"tracking.uri={uri}"], cwd=tmp_path)
    assert draws.returncode == 2
    assert re.fullmatch(r"runner: error: posterior\.samples=1000000000 \(the posterior predictive draws\) needs "
                        r"\d+\.\d GB of memory, \d+\.\d GB is available: fewer posterior\.samples\n", draws.stderr)
    no_runs_left(tmp_path)
    em = run_cli(["model=bmm", "inference=em", "restarts=100000", f"tracking.uri={uri}"], cwd=tmp_path)
    assert em.returncode == 2
    assert re.fullmatch(r"runner: error: the fit needs \d+\.\d GB of memory, \d+\.\d GB is available: fewer restarts, "
                        r"or less data \(data\.n\)\n", em.stderr), em.stderr
    (run,) = read_runs(uri)[1]
    assert run.info.status == "FAILED" and "needs" in run.data.tags["error"]
