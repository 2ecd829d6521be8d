"""hydra/launcher=slurm against a real SLURM: the fixture starts munged, slurmctld and slurmd (Debian's
slurm-wlm and munge; .ci/run installs them) on this one machine, from a slurm.conf written into the
test's folder (one node, localhost, with this machine's CPUs and memory; its own ports, state and
spool folders, munge key and socket), and ends them by their process ids.

- A job whose time limit (1 minute, SLURM's smallest) is shorter than its fit gets SLURM's signal,
  writes its checkpoint, is requeued, and continues its own run: one FINISHED MLflow run with the
  numbers of the same fit never interrupted.
- The 8-seed sweep of tests/e2e/test_ray_cluster.py through SLURM and through the basic launcher:
  the same final losses, one parent and 8 FINISHED children in the driver's store, the same best.

Without SLURM's programs the tests are skipped with the reason, except in CI (CI set), where that
is a failure: .ci/run installs them.
"""
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import free_port, read_runs, run_cli, sweep_runs

DAEMONS = ("munged", "slurmctld", "slurmd")
PROGRAMS = (*DAEMONS, "sbatch", "squeue", "scontrol", "scancel")
MISSING = [p for p in PROGRAMS if not (shutil.which(p) or Path("/usr/sbin", p).exists())]
if MISSING:
    if os.environ.get("CI"):
        raise RuntimeError(f"SLURM is not installed ({', '.join(MISSING)} missing): apt-get install slurm-wlm munge")
    pytest.skip(f"needs SLURM: apt-get install slurm-wlm munge (.ci/run installs them); missing {', '.join(MISSING)}",
                allow_module_level=True)

pytestmark = pytest.mark.xdist_group("slurm")  # one SLURM at a time (make test runs two workers)
SEEDS = "seed=" + ",".join(map(str, range(8)))
SWEEP = ["model=coin", "steps=50", SEEDS, "tracking.uri=sqlite:///mlflow.db", "tracking.experiment=slurm"]
#: a fit of about a minute or more here (33,000 to 100,000 steps/s): longer than the job's first stretch
LONG = ["model=gmm", "steps=4000000", "tracking.uri=sqlite:///mlflow.db", "tracking.experiment=slurm"]


def sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def node_line() -> str:
    """This machine as `slurmd -C` sees it (CPUs, sockets, cores, memory), named localhost."""
    out = subprocess.run([sbin("slurmd"), "-C"], capture_output=True, text=True, timeout=60).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("NodeName="))
    fields = [f for f in line.split()[1:] if not f.startswith("UpTime")]
    return " ".join(["NodeName=localhost", "NodeAddr=127.0.0.1", *fields, "State=UNKNOWN"])


def slurm_conf(root: Path) -> str:
    user = pwd.getpwuid(os.getuid()).pw_name
    return "\n".join([
        "ClusterName=runnertest", "SlurmctldHost=localhost(127.0.0.1)",
        f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}", f"SlurmUser={user}", f"SlurmdUser={user}",
        # cred_expire: a requeued job waits this long (default 120 s) for its old credential to expire
        "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={root}/munge.sock,cred_expire=10",
        f"StateSaveLocation={root}/state", f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/slurmctld.pid", f"SlurmdPidFile={root}/slurmd.pid",
        f"SlurmctldLogFile={root}/slurmctld.log", f"SlurmdLogFile={root}/slurmd.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core", "SchedulerType=sched/builtin", "SchedulerParameters=sched_interval=2",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none", "MpiDefault=none", "ReturnToService=2", "KillWait=5", "MinJobAge=600",
        node_line(), "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP", ""])


def start(cmd: list, log: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_for(check, seconds: float, what: str, logs=()) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} within {seconds} s; " + " ".join(Path(p).read_text()[-1500:] for p in logs))


@pytest.fixture
def slurm():
    """A one-node SLURM on localhost: the environment its commands need (SLURM_CONF)."""
    root = Path(tempfile.mkdtemp(prefix="slurm", dir="/tmp"))  # short: munge's socket path
    for d in ("state", "spool"):
        (root / d).mkdir()
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    (root / "slurm.conf").write_text(slurm_conf(root))
    env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
    procs = []
    try:
        procs.append(start([sbin("munged"), "-F", "-f", f"--key-file={key}", f"--socket={root}/munge.sock",
                            f"--pid-file={root}/munged.pid", f"--seed-file={root}/munged.seed",
                            f"--log-file={root}/munged.log"], root / "munged.out", env))
        wait_for(lambda: (root / "munge.sock").exists(), 30, "munged did not start", [root / "munged.out"])
        procs.append(start([sbin("slurmctld"), "-D", "-i", "-f", env["SLURM_CONF"]], root / "slurmctld.out", env))
        procs.append(start([sbin("slurmd"), "-D", "-N", "localhost", "-f", env["SLURM_CONF"]], root / "slurmd.out", env))
        wait_for(lambda: "idle" in subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True,
                                                  text=True).stdout, 60, "the node did not come up",
                 [root / "slurmctld.out", root / "slurmd.out"])
        yield {"SLURM_CONF": env["SLURM_CONF"]}
    finally:
        subprocess.run(["scancel", "--partition=debug"], env=env, capture_output=True)
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(root, ignore_errors=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def processes_in(folder: Path) -> list[str]:
    """The processes whose working directory or command line is under `folder` (a sweep's jobs and
    their tracking workers), as "pid command"."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if cwd.startswith(str(folder)) or str(folder) in cmd:
            found.append(f"{proc.name} {cmd[:200]}")
    return found


def slurm_runs(folder: Path) -> tuple[list, list]:
    return sweep_runs(f"sqlite:///{folder}/mlflow.db", "slurm")


@pytest.mark.timeout(1200)  # a SLURM job requeued past its time limit: 900 s allowed
def test_a_job_past_its_time_limit_is_one_finished_run_with_an_uninterrupted_fits_numbers(tmp_path, slurm):
    driver, alone = tmp_path / "driver", tmp_path / "alone"
    driver.mkdir(), alone.mkdir()
    # the same fit never interrupted, as a plain run, meanwhile (the two CPUs are shared with the job)
    reference = subprocess.Popen([os.sys.executable, "-m", "runner", *LONG, "hydra.run.dir=run", "progress=false"],
                                 cwd=alone, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc = run_cli(["-m", "hydra/launcher=slurm", "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=55",
                    "hydra.launcher.max_num_timeout=30", *LONG], cwd=driver, env=slurm, timeout=900)  # the README's
    out, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err[-3000:]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "1 jobs, 1 run, 0 skipped, 0 failed; 1 finished child runs" in proc.stdout
    parents, children = slurm_runs(driver)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 1 and children[0].info.status == "FINISHED"  # one run, whatever the requeues
    child = children[0]
    run_dir = Path(child.data.tags["run_dir"])
    logs = "".join(p.read_text() for p in (run_dir.parent / ".submitit").glob("*/*_log.out"))
    requeues = sum(1 for ln in logs.splitlines() if ln.startswith("submitit INFO") and "Requeued job" in ln)
    assert requeues >= 1, logs[-3000:]  # SLURM's time limit came during the fit
    assert child.data.tags["runner.resumed_from"] == str(run_dir) and "error" not in child.data.tags
    _, plain = read_runs(f"sqlite:///{alone}/mlflow.db", "slurm")
    assert len(plain) == 1
    assert child.data.metrics["final_loss"] == plain[0].data.metrics["final_loss"]
    for name in ("params.json", "metrics.json"):  # bit for bit: the learned params and every curve
        assert json.loads((run_dir / name).read_text()) == json.loads((alone / "run" / name).read_text()), name
    print(f"requeues: {requeues}; final_loss {child.data.metrics['final_loss']}")


@pytest.mark.timeout(1500)  # two sweeps, 600 s allowed each
def test_an_eight_seed_sweep_through_slurm_equals_the_basic_launcher(tmp_path, slurm):
    finals = {}
    for launcher in ("basic", "slurm"):
        folder = tmp_path / launcher
        folder.mkdir()
        proc = run_cli(["-m", f"hydra/launcher={launcher}", *SWEEP], cwd=folder, env=slurm, timeout=600)  # the README's
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "8 jobs, 8 run, 0 skipped, 0 failed; 8 finished child runs" in proc.stdout
        parents, children = slurm_runs(folder)
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert len(children) == 8 and all(c.info.status == "FINISHED" for c in children)
        assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
        by_seed = {c.data.tags["seed"]: c.data.metrics["final_loss"] for c in children}
        best = min(children, key=lambda c: c.data.metrics["final_loss"])
        assert parents[0].data.tags["best_run_id"] == best.info.run_id
        assert parents[0].data.metrics["final_loss"] == best.data.metrics["final_loss"]
        finals[launcher] = (by_seed, best.data.tags["seed"])
    assert finals["slurm"] == finals["basic"]
    assert len(set(finals["basic"][0].values())) == 8  # 8 different seeds, 8 different losses


def test_sigterm_to_the_driver_cancels_its_jobs_and_their_runs_stay_killed(tmp_path, slurm):
    """The driver stops on SIGTERM: it cancels its SLURM jobs (scancel), each job's run ends KILLED at
    its next safe point, and only then the parent ends KILLED; no run flips to FINISHED afterwards."""
    import sys

    env = {**os.environ, **slurm}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.Popen([sys.executable, "-m", "runner", "-m", "hydra/launcher=slurm", "seed=0,1", *LONG,
                             "checkpoint.every_s=0.5"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: list(tmp_path.glob("multirun/*/*/sweep.json")) and len(  # the store is set up by then
        [c for c in slurm_runs(tmp_path)[1] if c.info.status == "RUNNING"]) == 2, 240, "two jobs did not start")
    # the event: both jobs are into their fits (each has written a checkpoint between two chunks). Signalled
    # before that (while they compile), the jobs' runs ended KILLED without their own "interrupted": here
    # a job's own end is what is checked (was: a fixed 3 s sleep)
    wait_for(lambda: len(list(tmp_path.glob("multirun/*/*/*/checkpoint.npz"))) == 2, 240, "the two fits did not start")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True).stdout.strip() == ""
    # nothing can flip a run once no process of the sweep is left (the jobs, their tracking workers): wait
    # for that, then read the runs (was: a fixed 5 s)
    wait_for(lambda: not processes_in(tmp_path), 120, f"processes of the sweep outlived it: {processes_in(tmp_path)}")
    parents, children = slurm_runs(tmp_path)
    assert [p.info.status for p in parents] == ["KILLED"]
    assert sorted(c.info.status for c in children) == ["KILLED", "KILLED"]
    assert all(c.data.tags.get("error") == "interrupted" for c in children), [c.data.tags.get("error") for c in children]  # each job's own end: it was stopped
