"""A run directory whose fit checkpoints is locked (flock) by the command fitting it (issue 28: two
`resume=` of one run started 0.5 s apart both reopened it, and its loss history held 2,002 points
over 1,001 steps): a resume of a run that is still fitting, or a second resume while the first
runs, is one line, exit 2, before anything is reopened; the kernel releases the lock when the
command ends, a SIGKILL included. Real commands, a real sqlite store."""
import signal
import subprocess
import sys
import time

from conftest import read_runs, run_cli



def start(tmp_path, *args):
    return subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(check, proc, within=120):
    deadline = time.time() + within
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        if check():
            return
        time.sleep(0.3)
    proc.kill()
    raise AssertionError("timed out")


def the_run(uri, run_dir=None, run_id=None):
    """The run of `run_dir` (until a resume reopens it in its own) or of `run_id`."""
    try:
        runs = read_runs(uri)[1]  # under the store's lock
    except Exception:  # the store is being created
        return None
    return next((r for r in runs if r.data.tags.get("run_dir") == str(run_dir) or r.info.run_id == run_id), None)


def refused(tmp_path, fit, resume, folder):
    bad = run_cli([*fit, f"resume={resume}", f"hydra.run.dir={tmp_path}/bad"], cwd=tmp_path, timeout=120)
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.startswith(f"runner: error: resume: {folder} is being fitted by another command (pid "), bad.stderr
    assert bad.stderr.endswith("): wait for it to end, or stop it first\n") and bad.stderr.count("\n") == 1


def test_a_run_is_resumed_by_one_command_at_a_time(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    fit = ["model=gmm", "steps=50000000", "checkpoint.every_s=0.5", "progress=false", f"tracking.uri={uri}"]
    cut = tmp_path / "cut"
    first = start(tmp_path, *fit, f"hydra.run.dir={cut}")
    wait_for(lambda: (cut / "checkpoint.npz").exists() and the_run(uri, cut) is not None, first)
    run_id = the_run(uri, cut).info.run_id
    refused(tmp_path, fit, run_id, cut)  # the run is still fitting: not resumed under it
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=120) == 130
    assert the_run(uri, cut).info.status == "KILLED"

    resuming = start(tmp_path, *fit, f"resume={run_id}", f"hydra.run.dir={tmp_path}/a")
    wait_for(lambda: the_run(uri, run_id=run_id).data.tags.get("runner.pid") == str(resuming.pid), resuming)
    before = the_run(uri, run_id=run_id)
    assert before.info.status == "RUNNING"
    refused(tmp_path, fit, cut, cut)  # the second resume, while the first runs
    wait_for(lambda: (tmp_path / "a" / "checkpoint.npz").exists(), resuming)
    refused(tmp_path, fit, run_id, tmp_path / "a")  # by its id: the run's directory is now the first resume's
    after = the_run(uri, run_id=run_id)
    assert after.info.status == "RUNNING" and after.data.tags == before.data.tags  # nothing reopened or logged twice
    assert after.data.metrics == before.data.metrics and len(read_runs(uri)[1]) == 1

    resuming.kill()  # a crash: the kernel releases the lock, the run is left RUNNING
    resuming.wait(timeout=60)
    again = start(tmp_path, *fit, f"resume={run_id}", f"hydra.run.dir={tmp_path}/b")
    wait_for(lambda: the_run(uri, run_id=run_id).data.tags.get("runner.pid") == str(again.pid), again)
    again.send_signal(signal.SIGINT)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 130, err
    (run,) = read_runs(uri)[1]
    assert run.info.run_id == run_id and run.info.status == "KILLED"
