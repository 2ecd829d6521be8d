"""`hydra/launcher=ray`: hydra-ray-launcher's launcher, able to join an existing cluster.

The plugin always passes `object_store_memory` to `ray.init` (a small store for CI machines);
Ray refuses it when `ray.init.address` names a running cluster ("When connecting to an existing
cluster, object_store_memory must not be provided"), so it is left out then. Registered under the
plugin's own name (`ray`), after the plugin's config, so the spelling users know is this one.
Where each job writes is decided on the driver (runner.job.at_home: a job runs in the driver's
folder; runner's hydra.sweep.dir is absolute), so a job on another node logs into the driver's store.
"""

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import open_dict

try:  # the `ray` extra (pip install 'runner[ray]'): without it there is no hydra/launcher=ray (runner.extras says so)
    from hydra_plugins.hydra_ray_launcher._config import RayConf  # registers the plugin's node first
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher as PluginRayLauncher
except ImportError:
    RayConf = PluginRayLauncher = None

#: the plugin's default store for a Ray it starts itself (ray-project/ray#11966)
LOCAL_STORE_BYTES = 78643200


CONNECT_S = 5.0


def answers(address: str) -> None:
    """A cluster's HOST:PORT must answer within CONNECT_S seconds (Ray itself waits minutes for a
    head that is not there). Other forms (auto, ray://...) are left to Ray."""
    import socket

    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_S).close()
    except OSError as e:
        raise ConnectionError(f"no Ray cluster answers at hydra.launcher.ray.init.address={address} "
                              f"({e.strerror or e}): start it with `ray start --head`, or fix the address") from None


if PluginRayLauncher is not None:
    class RayLauncher(PluginRayLauncher):
        def launch(self, job_overrides, initial_job_idx):
            from hydra_plugins.hydra_ray_launcher._launcher_util import start_ray

            from runner.lifecycle import SIGNALS

            init = self.ray_cfg.init
            with open_dict(init):
                if init.get("address"):
                    answers(str(init.address))
                    init["object_store_memory"] = None  # present, so the plugin's setdefault leaves it out
                else:
                    init.setdefault("object_store_memory", LOCAL_STORE_BYTES)
            start_ray(init)  # the plugin's own start (it starts none when Ray is up)
            SIGNALS.take_back()
            return super().launch(job_overrides, initial_job_idx)


    @dataclass
    class RayLauncherConf:
        _target_: str = "hydra_plugins.runner_ray.launcher.RayLauncher"
        ray: RayConf = field(default_factory=RayConf)


    ConfigStore.instance().store(group="hydra/launcher", name="ray", node=RayLauncherConf, provider="runner")
