"""The restart axis sharded over 2 (forced host) devices gives the same numbers as one device: each
device count is a fresh process (XLA_FLAGS is read when JAX starts)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

SMALL = ["model=gmm", "guide=autonormal", "steps=30", "restarts=8", "select=final"]


SHARD_SCRIPT = """
import json, sys, jax, numpy as np
from runner.api import fit_config
_, r = fit_config(sys.argv[1:])
print(json.dumps({"devices": jax.device_count(), "losses": r.losses.tolist(),
                  "init": r.initial_losses.tolist(), "best": r.best}))
"""


def run_devices(n):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}
    out = subprocess.run([sys.executable, "-c", SHARD_SCRIPT, *SMALL, "jax.cache_dir=null"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(1500)  # two processes, 600 s allowed each
def test_two_devices_same_numbers_as_one():
    one, two = run_devices(1), run_devices(2)
    assert (one["devices"], two["devices"]) == (1, 2)
    np.testing.assert_allclose(two["init"], one["init"], rtol=1e-6)
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5, atol=1e-6)
    assert two["best"] == one["best"]


RUN_SCRIPT = """
import json, sys, jax, tempfile
from runner.api import run
configs = json.loads(sys.argv[1])
out = {"devices": jax.device_count()}
for i, args in enumerate(configs):
    o = run([*args, "tracking=none", "jax.cache_dir=null"], run_dir=tempfile.mkdtemp(), quiet=True)
    out[str(i)] = {k: v for k, v in o.scalars.items() if isinstance(v, (int, float))}
print(json.dumps(out))
"""

#: what the README promises on several devices: the whole command (its fit in chunks between safe
#: points, where a second chunk used to be refused: "compiled for input shardings that disagree")
DEVICE_CONFIGS = [["model=gmm", "guide=autodelta", "restarts=1000", "select=final", "steps=60"],
                  ["model=coin", "guide=autonormal", "replicates=4", "steps=60"],
                  ["model=gmm", "restarts=7", "steps=60"]]


@pytest.mark.timeout(2100)  # three processes, 600 s allowed each
def test_the_command_gives_the_same_numbers_on_1_2_and_3_devices(tmp_path):
    results = []
    for n in (1, 2, 3):
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}
        out = subprocess.run([sys.executable, "-c", RUN_SCRIPT, json.dumps(DEVICE_CONFIGS)], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert [r["devices"] for r in results] == [1, 2, 3]
    for i in map(str, range(len(DEVICE_CONFIGS))):
        one = results[0][i]
        assert np.isfinite(one["final_loss"])
        for other in results[1:]:
            assert other[i]["final_loss"] == pytest.approx(one["final_loss"], rel=1e-5), (i, one, other[i])
            if "best_restart" in one:
                assert other[i]["best_restart"] == one["best_restart"]
