"""`python -m runner ... | head -1`: the reader stops reading after one line. Writes to the closed pipe
raised BrokenPipeError in the command: a sweep's every job failed on it ("job ... failed:
BrokenPipeError") and logging printed tracebacks. Now the rest of the output goes nowhere and the
command does all its work."""
import json
import os
import subprocess
import sys


def test_a_sweep_piped_to_a_reader_that_stops_runs_every_job(tmp_path):
    env = {**os.environ}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.Popen([sys.executable, "-m", "runner", "-m", "model=coin", "steps=20", "tracking=none",
                             "seed=0,1,2", f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # as `head -1`: one line, then the reader is gone
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 0, err
    assert first and "BrokenPipe" not in err and "Traceback" not in err, err
    statuses = [json.loads(p.read_text())["status"] for p in sorted((tmp_path / "sweep").glob("*/runner_status.json"))]
    assert statuses == ["run", "run", "run"]
