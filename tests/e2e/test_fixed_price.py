"""The fixed price of one command, as a user sees it: `timing=true` says where the seconds went, phase
by phase, and the phases add up to the total; a refused config imports nothing heavy (it is refused
in well under a second of imports); a run imports only what its config uses (`python -X importtime`)."""
import re
import subprocess
import sys

from conftest import read_runs, run_cli

PHASES = ("startup", "compose", "build", "compile", "fit", "outputs", "logging", "exit")
LINE = re.compile(r"^runner: timing(?: \((\d+) jobs\))?: (.*), total (\d+\.\d\d) s$")


def timing_line(stderr: str) -> tuple[int, dict, float]:
    (line,) = [ln for ln in stderr.splitlines() if ln.startswith("runner: timing")]
    m = LINE.match(line)
    assert m, line
    phases = {name: float(s) for name, s in (re.fullmatch(r"(\w+) (\d+\.\d\d) s", p).groups() for p in m.group(2).split(", "))}
    return int(m.group(1) or 1), phases, float(m.group(3))


def test_timing_true_says_each_phase_and_they_add_up_to_the_total(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_cli(["model=coin", "steps=200", "timing=true", f"tracking.uri={uri}", f"hydra.run.dir={tmp_path}/run"],
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    jobs, phases, total = timing_line(proc.stderr)
    assert jobs == 1 and tuple(phases) == PHASES  # every phase, in the order a run meets them
    assert all(v >= 0 for v in phases.values()) and phases["build"] > 0 and phases["fit"] > 0
    # nothing is counted twice (compile is inside the fit) and little is left uncounted
    assert sum(phases.values()) <= total + 0.05 and sum(phases.values()) >= 0.9 * total - 0.1, (phases, total)
    # not a config setting of the run: the same config without it is the same run (its hash)
    again = run_cli(["model=coin", "steps=200", f"tracking.uri={uri}", f"hydra.run.dir={tmp_path}/run2"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    runs = read_runs(uri)[1]
    assert len(runs) == 2 and len({r.data.tags["config_hash"] for r in runs}) == 1
    assert "runner: timing" not in again.stderr  # off unless asked


def test_a_sweep_adds_its_jobs_phases_and_says_how_many(tmp_path):
    proc = run_cli(["-m", "model=coin", "steps=100", "seed=0,1", "timing=true", "tracking=none",
                    f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    jobs, phases, total = timing_line(proc.stderr)
    assert jobs == 2 and {"build", "fit", "outputs"} <= set(phases)
    assert sum(phases.values()) <= total + 0.05


HEAVY = ("jax", "numpyro", "optax", "arviz", "matplotlib", "mlflow", "scipy", "pandas", "xarray", "ray", "optuna",
         "jaxopt", "submitit", "sklearn")


def imported(stderr: str, top: bool = True) -> set[str]:
    """The top-level packages (`top=False`: the modules) `python -X importtime` says were imported."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            names.add(name.split(".")[0] if top else name)
    return names


def test_a_refused_config_imports_nothing_heavy(tmp_path):
    """The checks that need no model come before JAX: a range, an unknown option, a wrong type."""
    for args in (["steps=-1"], ["model=nope"], ["restarts=0"], ["optim.lr=abc"], ["tracking.max_points_per_curve=1"]):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "runner", *args, "tracking=none",
                               f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("runner: error:")]
        assert len(errors) == 1, (args, proc.stderr[-2000:])
        assert not imported(proc.stderr) & set(HEAVY), (args, errors, imported(proc.stderr) & set(HEAVY))


def test_a_run_imports_only_what_its_config_uses(tmp_path):
    """SVI with tracking=none: no store (mlflow), no engines a sweep or an optimizer would need
    (ray, optuna, submitit, jaxopt), no scikit-learn, no ArviZ (its file is written by h5netcdf), no
    matplotlib (the figures' helper process imports it)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "runner", "model=coin", "steps=100",
                           "tracking=none", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = imported(proc.stderr)
    assert {"jax", "numpyro", "optax", "h5netcdf"} <= names  # the reading is real
    assert not names & {"mlflow", "ray", "optuna", "submitit", "jaxopt", "sklearn"}, names
    # its inference_data.nc is written without ArviZ, xarray or pandas (~1.5 s of imports); its
    # figures are drawn by the command's helper process (matplotlib, ~0.7 s, on the other core),
    # the coin's without scipy.stats (~0.8 s)
    assert not names & {"arviz", "xarray", "pandas", "matplotlib"}, names
    assert "scipy.stats" not in imported(proc.stderr, top=False)
    assert {"inference_data.nc", "plots"} <= {p.name for p in (tmp_path / "run").iterdir()}
    assert sorted(p.name for p in (tmp_path / "run" / "plots").iterdir()) == ["coin.png", "loss.png"]


SLOW_STORE = """
import time

from runner.tracking.base import Tracking


class Slow(Tracking):
    background = True  # runs in the tracking worker process

    def sweep_started(self, start):
        time.sleep(0.5)  # MLflow's import and the store's set-up
        return "parent", False
"""

WHILE_WAITING = """
import sys
import threading

from omegaconf import OmegaConf

from runner.sweep import importing_while_waiting
from runner.tracking import from_config

backend = from_config(OmegaConf.create({"_target_": sys.argv[2]}))
env_set = dict(a.split("=", 1) for a in sys.argv[3:])
config = OmegaConf.create({"hydra": {"runtime": {"choices": {"hydra/launcher": sys.argv[1]}}, "job": {"env_set": env_set}}})
with importing_while_waiting(config, backend):
    backend.sweep_started(None)
print(sorted(m for m in ("jax", "numpyro", "optax", "matplotlib.pyplot", "h5netcdf") if m in sys.modules),
      [t.name for t in threading.enumerate() if t.name.startswith("runner-")])
"""


def test_a_sweep_imports_what_its_jobs_fit_with_while_the_worker_opens_the_store(tmp_path):
    """While the tracking worker sets the store up for the sweep's parent run, a launcher that runs
    the jobs in this process (basic, vectorized) has JAX, NumPyro, Optax and what writes the jobs'
    files (h5netcdf; pyplot is the figures' helper process's) imported in a thread, joined when the parent is there; another launcher (joblib: its jobs import them in
    their own processes), a store that is not waited for (tracking=none) and jobs that set a JAX_*
    variable (hydra.job.env_set: JAX reads it at its import) import none of them here."""
    import os

    (tmp_path / "slow_store.py").write_text(SLOW_STORE)
    (tmp_path / "while_waiting.py").write_text(WHILE_WAITING)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}

    def seen(launcher, target="slow_store.Slow", *env_set):
        proc = subprocess.run([sys.executable, "while_waiting.py", launcher, target, *env_set], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout.strip()

    everything = "['h5netcdf', 'jax', 'numpyro', 'optax'] []"  # imported, and the thread is gone
    assert seen("basic") == everything and seen("vectorized") == everything
    assert seen("joblib") == "[] []"
    assert seen("basic", "runner.tracking.none.NoTracking") == "[] []"
    assert seen("basic", "slow_store.Slow", "JAX_DEBUG_NANS=1") == "[] []"  # JAX reads it as the job imports it
    assert seen("basic", "slow_store.Slow", "OTHER=1") == everything


def test_hydra_composes_runners_own_configs_once_and_a_users_hydra_mode_still_counts(tmp_path, monkeypatch):
    """Hydra composes a config once only to read hydra.mode (Hydra.get_mode), then for the run.
    runner's own configs never set it - with any launcher or sweeper it ships - so for a command
    line of runner's configs alone the CLI answers that question (unset) without composing; with a
    config folder of the user's or a hydra.mode on the command line Hydra asks as before."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    import runner.__main__ as cli
    from runner import CONF_DIR

    ask = Hydra.get_mode
    hydra = Hydra.create_main_hydra2(task_name="runner", config_search_path=create_config_search_path(CONF_DIR))
    try:
        asked_in_process(hydra, ask, monkeypatch, cli, tmp_path)
    finally:
        GlobalHydra.instance().clear()  # (the other tests in this process compose with their own)
    # the command line's hydra.mode: a sweep without -m, as Hydra runs it
    proc = run_cli(["hydra.mode=MULTIRUN", "model=coin", "steps=20", "seed=0,1", "tracking=none",
                    f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir() and p.name.isdigit()) == ["0", "1"]


def asked_in_process(hydra, ask, monkeypatch, cli, tmp_path):
    """Hydra's own answer for runner's configs, and where the CLI answers it instead."""
    from hydra._internal.hydra import Hydra
    from hydra.types import RunMode

    options = [f"{group}={name}" for group in ("hydra/launcher", "hydra/sweeper")
               for name in hydra.config_loader.get_group_options(group)]
    assert {"hydra/launcher=vectorized", "hydra/launcher=joblib", "hydra/sweeper=optuna"} <= set(options), options
    for overrides in ([], ["model=gmm", "seed=0,1"], *([o] for o in options)):
        assert ask(hydra, "config", overrides) is None, overrides  # Hydra's own answer: unset
    for overrides in ([], ["hydra/launcher=vectorized"], ["hydra/launcher=joblib"], ["hydra/sweeper=optuna"]):
        cfg = hydra.compose_config("config", overrides, run_mode=RunMode.MULTIRUN, with_log_configuration=False,
                                   validate_sweep_overrides=False)  # (get_mode's compose, its errors not hidden)
        assert cfg.hydra.mode is None, overrides
    import runner.trust

    asked = []

    def spy(self, config_name, overrides):
        asked.append(config_name)
        return ask(self, config_name, overrides)

    monkeypatch.setattr(Hydra, "get_mode", spy)

    def hydra_asks(argv) -> bool:
        cli._compose_once(argv)
        before = len(asked)
        assert Hydra.get_mode(hydra, "config", ["model=gmm"]) is None
        return len(asked) > before

    assert not hydra_asks(["model=gmm", "seed=0,1"])  # runner's configs alone: known, not composed
    assert hydra_asks(["-cd", str(tmp_path), "model=gmm"])  # a user's config folder: Hydra's question
    assert hydra_asks([f"--config-d={tmp_path}", "model=gmm"])  # (argparse takes a flag shortened)
    assert hydra_asks(["hydra.mode=MULTIRUN"])
    assert not hydra_asks(["model=coin"])  # the same process, the next command line
    monkeypatch.setattr(runner.trust, "plugin_roots", lambda: {"users_plugin"})
    assert hydra_asks(["model=coin"])  # an installed plugin's configs may set hydra.mode


def test_a_gmm_run_that_reads_its_kept_programs_imports_no_funsor(tmp_path):
    """The GMM's assignments (infer_discrete) need funsor (~0.2 s of import) to be traced; a second
    run of the same config reads the traced program (runner/inference/program_cache.py) and never
    imports it, and writes the same assignments."""
    def run(name):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "runner", "model=gmm", "steps=30",
                               "tracking=none", f"jax.cache_dir={tmp_path}/cache", f"hydra.run.dir={tmp_path}/{name}"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return imported(proc.stderr), (tmp_path / name / "assignments.json").read_text()

    (first, a), (again, b) = run("first"), run("again")
    assert "funsor" in first and "jax" in again
    assert "funsor" not in again and a == b


def test_a_repeated_config_lowers_nothing(tmp_path):
    """A config run before reads its programs compiled (runner/inference/program_cache.py) and puts
    its arrays on the device with plain transfers: nothing is lowered, so the MHLO dialect that JAX
    imports at its first lowering is never imported (jnp.asarray of the data and PRNGKey lowered
    small programs of their own: ~30 ms of a coin run). SVI, a mixture's assignments and
    log-likelihood, and EM."""
    def run(*args):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "runner", *args, "tracking=none",
                               f"jax.cache_dir={tmp_path}/cache", f"hydra.run.dir={tmp_path}/run"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return imported(proc.stderr, top=False)

    def lowered(modules):  # JAX imports the MHLO dialect at its first lowering (JAX 0.10)
        return any("mhlo" in m for m in modules)

    for config in (["model=coin", "steps=50"], ["model=gmm", "steps=30"], ["model=gmm", "inference=em"]):
        first, again = run(*config), run(*config)
        assert lowered(first) and "numpyro" in again, config  # the first run lowered its programs
        assert not lowered(again), (config, sorted(m for m in again if "mlir" in m))


GC_PROBE = """
import gc
import json
import os

from runner.tracking.none import NoTracking


class Probe(NoTracking):
    def run_completed(self, record):
        self._say("job")
        return super().run_completed(record)

    def sweep_completed(self, parent_id, result):
        self._say("sweep")
        return super().sweep_completed(parent_id, result)

    def _say(self, where):
        with open("gc.jsonl", "a") as f:
            f.write(json.dumps({"where": where, "pid": os.getpid(), "collecting": gc.isenabled(),
                                "frozen": gc.get_freeze_count()}) + "\\n")
"""


def test_the_cli_collects_garbage_again_once_built_and_in_a_sweeps_parent(tmp_path):
    """The CLI turns the garbage collector off while it imports and builds (runner.lifecycle.pause_gc),
    then on again with what exists frozen: by a run's end, and in a sweep's parent whose jobs run
    in other processes (joblib: it builds nothing itself, and may wait for hours)."""
    import json

    (tmp_path / "gcprobe.py").write_text(GC_PROBE)
    one = run_cli(["model=coin", "steps=20", "tracking=none", "tracking._target_=gcprobe.Probe",
                   f"hydra.run.dir={tmp_path}/one"], cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-2000:]
    sweep = run_cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model=coin", "steps=20", "seed=0,1",
                     "tracking=none", "tracking._target_=gcprobe.Probe", f"hydra.sweep.dir={tmp_path}/sweep"],
                    cwd=tmp_path)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    said = [json.loads(line) for line in (tmp_path / "gc.jsonl").read_text().splitlines()]
    assert [s["where"] for s in said] == ["job", "job", "job", "sweep"]
    assert all(s["collecting"] and s["frozen"] > 10000 for s in (said[0], said[-1])), said
    assert said[-1]["pid"] not in {s["pid"] for s in said[1:3]}  # the parent, not a job's process
