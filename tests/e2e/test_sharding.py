"""The restart axis sharded over 2 (forced host) devices gives the same numbers as one device: each
device count is a fresh process (XLA_FLAGS is read when JAX starts)."""
import json
import os
import subprocess
import sys

import numpy as np
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


def test_two_devices_same_numbers_as_one():
    one, two = run_devices(1), run_devices(2)
    assert (one["devices"], two["devices"]) == (1, 2)
    np.testing.assert_allclose(two["init"], one["init"], rtol=1e-6)
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5, atol=1e-6)
    assert two["best"] == one["best"]
