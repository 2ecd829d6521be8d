"""hydra/launcher=ray joining a two-node Ray cluster on loopback that the test starts (`ray start
--head`, then a second node joining it) and ends by its processes' ids. A sweep run from a folder
of its own, with the store's path relative to it, lands in that folder's store, whichever node ran
each job, with the same numbers as the basic launcher; a cluster that does not answer ends the
sweep's parent FAILED in one line."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import free_port, run_cli, sweep_runs

RAY = str(Path(sys.executable).with_name("ray"))
ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}  # a token left in ~/.ray would be asked for
SEEDS = "seed=" + ",".join(map(str, range(8)))
SWEEP = ["model=coin", "steps=50", SEEDS, "tracking.uri=sqlite:///mlflow.db", "tracking.experiment=ray"]


def processes_of(marker: str) -> list[int]:
    """The ids of the processes whose command line names `marker` (the cluster's temp folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


@pytest.fixture
def cluster(tmp_path):
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, **ENV}
    port = free_port()
    try:
        for args, folder in ((["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}"], "head"),
                             ([f"--address=127.0.0.1:{port}"], "node")):
            (tmp_path / folder).mkdir()
            out = subprocess.run([RAY, "start", "--num-cpus=1", "--disable-usage-stats", *args], cwd=tmp_path / folder,
                                 env=env, capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        yield f"127.0.0.1:{port}"
    finally:
        for pid in processes_of(temp):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp, ignore_errors=True)


def finals(folder: Path) -> tuple[list, list]:
    return sweep_runs(f"sqlite:///{folder}/mlflow.db", "ray")


def test_a_sweep_on_a_two_node_cluster_lands_in_the_drivers_store(tmp_path, cluster):
    driver = tmp_path / "driver"
    driver.mkdir()
    proc = run_cli(["-m", "hydra/launcher=ray", f"hydra.launcher.ray.init.address={cluster}", *SWEEP], cwd=driver,
                   env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "8 jobs, 8 run, 0 skipped, 0 failed; 8 finished child runs" in proc.stdout
    parents, children = finals(driver)
    assert len(parents) == 1 and len(children) == 8 and all(c.info.status == "FINISHED" for c in children)
    assert parents[0].info.status == "FINISHED"
    assert len({c.data.tags["runner.pid"] for c in children}) >= 2  # jobs ran in several worker processes
    assert not [p for p in (tmp_path / "head", tmp_path / "node") if any(p.iterdir())]  # nothing written there
    basic = tmp_path / "basic"
    basic.mkdir()
    assert run_cli(["-m", *SWEEP], cwd=basic).returncode == 0
    _, same = finals(basic)
    by_seed = {c.data.params["seed"]: c.data.metrics["final_loss"] for c in same}
    assert {c.data.params["seed"]: c.data.metrics["final_loss"] for c in children} == by_seed
    best = min(by_seed.values())
    assert parents[0].data.metrics["final_loss"] == best


def test_a_cluster_that_does_not_answer_fails_the_parent_in_one_line(tmp_path):
    proc = run_cli(["-m", "hydra/launcher=ray", f"hydra.launcher.ray.init.address=127.0.0.1:{free_port()}", "model=coin",
                    "steps=20", "seed=0,1", "tracking.uri=sqlite:///mlflow.db", "tracking.experiment=ray"],
                   cwd=tmp_path, env=ENV, timeout=120)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("runner: error:")]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(errors) == 1 and "no Ray cluster answers at hydra.launcher.ray.init.address=127.0.0.1:" in errors[0]
    parents, children = finals(tmp_path)
    assert [p.info.status for p in parents] == ["FAILED"] and children == []
    assert "no Ray cluster answers" in parents[0].data.tags["error"]
