import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from runner.tracking.base import Tracking

ROOT = Path(__file__).resolve().parent.parent
#: a user's project folder: plain model functions, JSON and CSV data, its own conf/
EXAMPLE = ROOT / "examples" / "my_project"


@pytest.fixture(scope="session", autouse=True)
def jax_cache():
    """XLA's persistent compile cache of the tests (RUNNER_JAX_CACHE: the default of jax.cache_dir,
    for runs in this process and the commands it starts): ~/.cache/runner/jax-tests, never the
    user's ~/.cache/runner/jax, kept between test runs as XLA's cache is meant to be (a cold cache
    makes `make test` several times slower: every program of ~1000 tests compiled again; the
    cache holds compiled programs by their hash, so a run never reads another program's).
    RUNNER_JAX_CACHE set already (a CI's own cache) is used as it is."""
    if os.environ.get("RUNNER_JAX_CACHE"):
        yield Path(os.environ["RUNNER_JAX_CACHE"])
        return
    folder = Path.home() / ".cache" / "runner" / "jax-tests"
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["RUNNER_JAX_CACHE"] = str(folder)
    try:
        yield folder
    finally:
        os.environ.pop("RUNNER_JAX_CACHE", None)


def _mlflow_uri_state():
    """(the URI mlflow.set_tracking_uri set in this process, or None; MLFLOW_TRACKING_URI, which it
    exports to every later subprocess). None while mlflow is not imported."""
    if "mlflow" not in sys.modules:
        return None, os.environ.get("MLFLOW_TRACKING_URI")
    from mlflow.tracking._tracking_service import utils

    return utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")


@pytest.fixture(autouse=True)
def no_global_state_left():
    """A test leaves the process as it found it: MLflow's tracking URI (module and environment),
    the logging record factory (runner.redact.mask_log_records), RUNNER_JAX_CACHE."""
    import logging

    before = (_mlflow_uri_state(), logging.getLogRecordFactory(), os.environ.get("RUNNER_JAX_CACHE"))
    yield
    after = (_mlflow_uri_state(), logging.getLogRecordFactory(), os.environ.get("RUNNER_JAX_CACHE"))
    assert after[0] == before[0] or before[0][0] is None and after[0] == (None, before[0][1]), (
        f"the test left MLflow's tracking URI set: {after[0]} (use the tracking_uri fixture)")
    assert after[1] is before[1], "the test left a log record factory installed (mask_log_records)"
    assert after[2] == before[2], "the test changed RUNNER_JAX_CACHE"


@pytest.fixture
def tracking_uri():
    """mlflow.set_tracking_uri for one test (what mlflow.pyfunc.load_model('runs:/...') reads); the
    URI and the MLFLOW_TRACKING_URI it exports are put back afterwards."""
    import mlflow

    uri, env = _mlflow_uri_state()
    yield mlflow.set_tracking_uri
    mlflow.set_tracking_uri(uri)  # None: unset, MLFLOW_TRACKING_URI removed
    if env is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = env


@pytest.fixture
def store(tmp_path):
    """A fresh sqlite MLflow store URI in a temp dir."""
    return f"sqlite:///{tmp_path}/mlflow.db"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc, timeout=90):
    """Until `url` answers 200; fails at once if the server process `proc` exits (with its
    stderr when that is piped)."""
    import time
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read()[-2000:] if proc.stderr else ""
            raise RuntimeError(f"server exited with {proc.returncode}: {err}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


def run_cli(args, cwd, timeout=600, env=None):
    """`python -m runner ARGS` in a subprocess, as a user runs it."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def fit_cli(folder, *args, run="run"):
    """`python -m runner ARGS` in `folder` into its own sqlite store and run directory `run`; it
    must exit 0 and leave its newest run FINISHED. (proc, client, that run, the run directory)."""
    uri = f"sqlite:///{folder}/mlflow.db"
    proc = run_cli([*args, f"tracking.uri={uri}", f"hydra.run.dir={folder}/{run}"], cwd=folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, runs = read_runs(uri)
    latest = max(runs, key=lambda r: r.info.start_time)
    assert latest.info.status == "FINISHED"
    return proc, client, latest, Path(folder) / run


def sweep_runs(uri, experiment="runner") -> tuple[list, list]:
    """(the sweep parents, the child runs) of an experiment in a store."""
    _, runs = read_runs(uri, experiment)
    return ([r for r in runs if r.data.tags.get("runner.role") == "sweep"],
            [r for r in runs if r.data.tags.get("mlflow.parentRunId")])


def needs(reason: str):
    """A test that needs a part this machine lacks (PostgreSQL, Chromium, a tmpfs mount, ...): skipped
    here with the reason; in CI (CI set, as .ci/run exports it) it fails instead, since CI installs
    every part (and pytest_runtest_makereport below fails any other skip there)."""
    if os.environ.get("CI"):
        pytest.fail(f"CI runs every test, and this one cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (CI set) a skipped test is a failed one: nothing is silently left unchecked there."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every test must run: {reason}"


#: PostgreSQL's server programs: on PATH, or where Debian's postgresql package puts them
#: (/usr/lib/postgresql/<version>/bin, the newest version)
PG_PROGRAMS = ("initdb", "pg_ctl", "createdb")


def pg_program(name: str) -> str | None:
    import glob
    import shutil

    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                      key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parts[-3].split(".")])
    return versions[-1] if versions else None


def runuser() -> str | None:
    """util-linux's runuser (root starts PostgreSQL as the postgres user): /usr/sbin is not on every PATH."""
    import shutil

    return shutil.which("runuser") or next((p for p in ("/usr/sbin/runuser", "/sbin/runuser") if os.path.exists(p)), None)


def postgres_missing() -> str | None:
    """Why a real PostgreSQL cannot be started here, or None."""
    missing = [p for p in PG_PROGRAMS if pg_program(p) is None]
    if missing:
        return (f"PostgreSQL's {', '.join(missing)} are neither on PATH nor in /usr/lib/postgresql/*/bin: "
                "apt-get install postgresql (.ci/run installs it)")
    if os.geteuid() == 0 and not runuser():
        return "running as root, and runuser (to start PostgreSQL as the postgres user) is missing"
    return None


@contextmanager
def postgres(database: str):
    """A real PostgreSQL started for one test (initdb, pg_ctl on a free port, as the 'postgres' user
    when run as root: initdb refuses root), with `database` created; yields its SQLAlchemy URL
    and stops the server at the end."""
    import pwd
    import shutil
    import tempfile

    why = postgres_missing()
    if why:
        needs(why)
    initdb, pg_ctl, createdb = (pg_program(p) for p in PG_PROGRAMS)
    as_pg = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            needs("running as root and there is no 'postgres' user for initdb (apt-get install postgresql makes it)")
    d = Path(tempfile.mkdtemp(prefix="runner-pg-"))
    if os.geteuid() == 0:
        os.chown(d, pw.pw_uid, pw.pw_gid)
        d.chmod(0o755)
        as_pg = [runuser(), "-u", "postgres", "--"]
    port, data = free_port(), d / "data"
    try:
        subprocess.run([*as_pg, initdb, "-D", str(data), "-A", "trust", "-U", "runner"], check=True, capture_output=True)
        subprocess.run([*as_pg, pg_ctl, "-D", str(data), "-l", str(d / "log"), "-w", "start", "-o",
                        f"-p {port} -k {d} -c listen_addresses=127.0.0.1"], check=True, capture_output=True)
        subprocess.run([createdb, "-h", "127.0.0.1", "-p", str(port), "-U", "runner", database],
                       check=True, capture_output=True)
        yield f"postgresql+psycopg2://runner@127.0.0.1:{port}/{database}"
    finally:
        subprocess.run([*as_pg, pg_ctl, "-D", str(data), "-w", "stop", "-m", "fast"], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def read_runs(uri, experiment="runner"):
    """The store's runs, read as a user's second process would. Opening a sqlite store that a
    command is creating at that moment migrates it twice (the command then fails): the test takes
    the store's own lock while it opens it, as every runner command does."""
    from mlflow.tracking import MlflowClient

    from runner.tracking.mlflow.store import store_lock

    with store_lock(uri):
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment)  # the store is opened (and created) here
    if exp is None:
        return client, []
    return client, client.search_runs([exp.experiment_id])


def run_cli_tty(args, cwd, timeout=600):
    """`python -m runner ARGS` with stderr on a pseudo-terminal, as in an interactive shell.
    Returns (returncode, stdout, what the terminal received). Both are read as they come (a full
    stdout pipe cannot block the child); a child still running after `timeout` seconds is killed
    and TimeoutExpired raised."""
    import pty
    import select
    import time

    env = {**os.environ}
    env.pop("HYDRA_FULL_ERROR", None)
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen, out = {master: b"", proc.stdout.fileno(): b""}, proc.stdout.fileno()
    open_fds = [master, out]
    deadline = time.monotonic() + timeout
    try:
        while open_fds:  # until the terminal and stdout are both closed (EOF / EIO once the child exits)
            left = deadline - time.monotonic()
            if left <= 0:  # a hung child fails the test, it does not hang it
                proc.kill()
                raise subprocess.TimeoutExpired(proc.args, timeout, output=seen[out], stderr=seen[master])
            ready, _, _ = select.select(open_fds, [], [], min(left, 1.0))
            for fd in ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # the child closed the terminal
                    chunk = b""
                if chunk:
                    seen[fd] += chunk
                else:
                    open_fds.remove(fd)
        proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)
        proc.stdout.close()
    return proc.returncode, seen[out].decode(), seen[master].decode(errors="replace")


# --- in-process helpers (tests/unit) -----------------------------------------------------------

@pytest.fixture(scope="session")
def xla_cache():
    """XLA's persistent compile cache (the config's jax.cache_dir), as runner.api.fit and the CLI
    turn it on, for tests that fit through lower-level functions."""
    from runner.api import compose
    from runner.app import configure_jax

    cfg, _ = compose()
    configure_jax(cfg.jax.cache_dir)


class Recorder(Tracking):
    """A tracking backend that keeps what a run hands to it (`tracking._target_=conftest.Recorder`):
    the tags, params, scalars, curves and artifact list an MLflow run would receive, in-process."""
    records: list = []

    def __init__(self, **settings):
        pass

    def run_completed(self, record):
        Recorder.records.append(vars(record))
        return f"recorded-{len(Recorder.records)}"


def run_recorded(run_dir, *overrides, config_dir=None):
    """`runner.run(overrides)` in this process into `run_dir`, its record kept by Recorder (no
    store, no subprocess). Returns (record, outcome); the run must finish."""
    import runner

    Recorder.records.clear()
    out = runner.run([*overrides, "tracking=none", "tracking._target_=conftest.Recorder"],
                     config_dir=config_dir, run_dir=run_dir, quiet=True)
    (record,) = Recorder.records
    assert record["status"] == "FINISHED"
    return record, out


def write_idx(path: Path, x, compress: bool):
    """An MNIST-format IDX file (uint8) of array `x`, gzipped when `compress`."""
    import gzip
    import struct

    import numpy as np

    raw = struct.pack(">BBBB", 0, 0, 0x08, x.ndim) + struct.pack(f">{x.ndim}I", *x.shape) + x.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def same_partition(a, b):
    """Two label vectors that name the same partition (up to the labels' order)."""
    from itertools import permutations

    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    return any((np.array(p)[a] == b).all() for p in permutations(range(max(a.max(), b.max()) + 1)))


# The GMM tutorial's seed 000: weights = [0.375 0.625], locs = [0.4989534 10.984944],
# scale = 0.6514341831207275, best initial loss 25.1498 and "avg. loss [191-200]: 17.4433"
GMM_WEIGHTS, GMM_LOCS, GMM_SCALE, GMM_LOSS = [0.375, 0.625], [0.4989534, 10.984944], 0.6514342, 17.4433


def sorted_by_loc(params):
    """An AutoDelta GMM fit's (weights, locs), ordered by location (labels are arbitrary)."""
    import numpy as np

    order = np.argsort(params["locs_auto_loc"])
    return params["weights_auto_loc"][order], params["locs_auto_loc"][order]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on loopback with its own sqlite store: its URL."""
    port = free_port()
    exe = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen(
        [str(exe), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
         "--artifacts-destination", str(tmp_path / "artifacts")],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def user_module():
    """examples/my_project/mymodels.py, imported as the user's own module."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        import mymodels
    finally:
        sys.path.remove(str(EXAMPLE))
    return mymodels
