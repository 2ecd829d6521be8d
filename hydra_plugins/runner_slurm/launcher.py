"""`hydra/launcher=slurm`: hydra-submitit-launcher's SLURM launcher (`submitit_slurm`, the same
settings) with runner's defaults and a checkpoint hook. A name of its own: Hydra's plugin scan runs
every plugin module again, in the order of the paths it finds them on, so a node stored under the
plugin's name would be replaced by the plugin's own whenever the plugin is scanned after runner.

A job that reaches its time limit is requeued and continues its own run:
- SLURM sends USR2 `signal_delay_s` before the limit (submitit's `--signal`). submitit's own
  handler would pickle the job and exit inside whatever code the signal lands in (a fit ended
  FAILED, its checkpoint unused); here the signal is only recorded (runner.lifecycle
  SIGNALS.time_out), the fit stops at its next safe point and writes its checkpoint, the run ends
  KILLED with "timed out: the job is requeued ..." and then submitit's handler requeues the job.
- The requeued job (the same Hydra job: the same run directory) finds its checkpoint and reopens
  its run (runner.job.requeued_dir: the environment variable RUNNER_REQUEUED), which ends FINISHED
  with the numbers of a fit never interrupted: one MLflow run per job, whatever the requeues.
- The driver waits for every job, requeues included, then summarises the sweep's parent.
- Ctrl-C or SIGTERM to the driver cancels the sweep's SLURM jobs (scancel: each job's run ends
  KILLED at its next safe point) and waits for them to end before the parent ends KILLED.
"""

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore

try:  # the `slurm` extra (pip install 'runner[slurm]'): without it there is no hydra/launcher=slurm
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as PluginSlurmLauncher
except ImportError:
    SlurmQueueConf = PluginSlurmLauncher = None

#: seconds the driver waits for its cancelled jobs to end (SLURM's KillWait is 30 s by default)
CANCEL_WAIT_S = 40.0


def cancel(folder: Path) -> None:
    """scancel the jobs submitit submitted into `folder` (one subfolder per job id), then wait
    until SLURM has none of them left (or CANCEL_WAIT_S)."""
    ids = sorted({p.name.split("_")[0] for p in folder.glob("*") if p.is_dir() and p.name.split("_")[0].isdigit()})
    if not ids:
        return
    subprocess.run(["scancel", *ids], check=False, capture_output=True, timeout=30)
    deadline = time.monotonic() + CANCEL_WAIT_S
    while time.monotonic() < deadline:
        left = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(ids)], capture_output=True, text=True,
                              timeout=30)
        if left.returncode != 0 or not left.stdout.strip():
            return
        time.sleep(1)


if PluginSlurmLauncher is not None:
    class SlurmLauncher(PluginSlurmLauncher):
        requeues = 0  # how often this job was requeued (checkpoint() counts, in the pickle of the next one)

        def __call__(self, *args, **kwargs):
            from runner.job import REQUEUED
            from runner.lifecycle import SIGNALS, TimedOut

            requeued = self.requeues or int(os.environ.get("SLURM_RESTART_COUNT") or 0)  # also SLURM's own requeue
            os.environ[REQUEUED] = str(requeued) if requeued else ""
            usr = getattr(signal, "SIG" + self._job_environment().USR_SIG)
            submitits = signal.getsignal(usr)
            SIGNALS.install()  # scancel's SIGTERM: the run ends KILLED at its next safe point
            signal.signal(usr, SIGNALS.time_out)
            try:
                return super().__call__(*args, **kwargs)
            except TimedOut:
                if not callable(submitits):
                    raise
                # SLURM ends the requeued job's processes with SIGTERM: nothing left here to record it
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                submitits(usr, None)  # submitit: checkpoint() pickled, `scontrol requeue`, exit
                raise

        def _job_environment(self):
            from submitit.slurm.slurm import SlurmJobEnvironment

            return SlurmJobEnvironment

        def checkpoint(self, *args, **kwargs):
            """The job again, requeued (submitit pickles what this returns): it continues its run."""
            self.requeues += 1
            return super().checkpoint(*args, **kwargs)

        def launch(self, job_overrides, initial_job_idx):
            from runner.lifecycle import SIGNALS

            folder = Path(str(self.params["submitit_folder"])).parent
            # first, before the sweep's own hook ends its parent: the jobs end (KILLED) before it does
            SIGNALS.at_stop = {"slurm": lambda error=None: cancel(folder), **SIGNALS.at_stop}
            returns = super().launch(job_overrides, initial_job_idx)  # on a signal the hook stays, for SIGNALS.stopped
            SIGNALS.at_stop.pop("slurm", None)
            return returns

    @dataclass
    class RunnerSlurmConf(SlurmQueueConf):
        """The plugin's settings; runner's defaults: a job that times out is requeued (it continues
        from its checkpoint), up to 10 times. (No `from __future__ import annotations` in this
        module: Hydra's scan runs it outside sys.modules, where dataclasses cannot read them.)"""
        _target_: str = "hydra_plugins.runner_slurm.launcher.SlurmLauncher"
        max_num_timeout: int = 10


    ConfigStore.instance().store(group="hydra/launcher", name="slurm", node=RunnerSlurmConf,
                                 provider="runner")
