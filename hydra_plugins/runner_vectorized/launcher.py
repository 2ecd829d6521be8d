"""`hydra/launcher=vectorized`: the fast way to sweep. The jobs Hydra hands it are grouped by what
their fit compiles to, each group is fitted as one compiled program (as replicates are), then
every job runs as Hydra's basic launcher runs it, in this process, with its fit done: its own
folder, child run, params, tags, curves, files, status, and the value the sweeper gets (also
under hydra/sweeper=optuna, whose batches of n_jobs trials become one program). runner/fusion.py
says what fuses; runner/inference/svi/fused.py is the program.

    python -m runner -m hydra/launcher=vectorized optim.lr=0.01,0.03,0.1,0.3 seed=0,1,2,3
    ... hydra.launcher.prune=halving   # successive halving inside the program (keep, first)
    ... hydra.launcher.max_memory_gb=4 # a group planning more is split into groups that fit

(No `from __future__ import annotations` in this module: Hydra's scan runs it outside
sys.modules, where dataclasses cannot read them.)
"""
import copy
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher

log = logging.getLogger(__name__)

PRUNE_RULES = ("halving",)
AHEAD_PREFIX = ".runner-ahead-"  # a folder under the sweep's: fused jobs' files written ahead (runner.fusion.Ahead)


@dataclass
class VectorizedLauncherConf:
    _target_: str = "hydra_plugins.runner_vectorized.launcher.VectorizedLauncher"
    prune: Optional[str] = None  # halving: successive halving of each fused group's jobs
    keep: float = 0.5  # halving: the fraction of the jobs still training kept at each rung
    first: float = 0.125  # halving: the first rung, a fraction of the steps (then each 1/keep times the last)
    max_memory_gb: Optional[float] = None  # the most a fused program may plan to use (None: what is free)


ConfigStore.instance().store(group="hydra/launcher", name="vectorized", node=VectorizedLauncherConf,
                             provider="runner")


class VectorizedLauncher(Launcher):
    def __init__(self, prune=None, keep=0.5, first=0.125, max_memory_gb=None) -> None:
        super().__init__()
        # checked here, as Hydra builds the launcher: one line (exit 2) before any job
        self.settings = checked(dict(prune=prune, keep=keep, first=first, max_memory_gb=max_memory_gb))
        self.config = self.task_function = self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        from hydra_plugins.runner_vectorized.compose import install

        install(hydra_context)  # the sweeper's batch check and this launcher: each choice of groups composed once
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import open_dict, read_write

        from runner import fusion

        settings = self.settings
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        sweep_configs, task_configs = [], []
        for idx, overrides in enumerate(job_overrides, initial_job_idx):
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = sweep_config.hydra.job.num = idx
            HydraConfig.instance().set_config(sweep_config)
            folder = os.path.join(str(sweep_config.hydra.sweep.dir), str(sweep_config.hydra.sweep.subdir))
            with read_write(sweep_config.hydra.runtime), open_dict(sweep_config.hydra.runtime):
                sweep_config.hydra.runtime.output_dir = os.path.abspath(folder)  # as run_job sets it
            HydraConfig.instance().set_config(sweep_config)  # as run_job does: ${hydra:...} resolves
            task = copy.deepcopy(sweep_config)
            with read_write(task), open_dict(task):
                del task["hydra"]
            sweep_configs.append(sweep_config)
            task_configs.append(task)
        finished = fusion.finished_before(task_configs, self.config.hydra.sweep.dir)  # their runs skip them
        groups = fusion.plan(task_configs, skip=finished)
        for line in fusion.describe(groups, [list(filter_overrides(o)) for o in job_overrides], len(finished)):
            print(line)
        for name, spec in (self.config.hydra.job_logging.get("loggers") or {}).items():  # the jobs' (jax: WARNING)
            logging.getLogger(name).setLevel(spec.get("level", "WARNING"))
        fits = fusion.fit_groups(groups, task_configs, settings)
        # each job's files while the one before it is logged, in a folder of this launch's own
        ahead = Path(tempfile.mkdtemp(prefix=AHEAD_PREFIX, dir=os.path.abspath(str(self.config.hydra.sweep.dir))))
        fusion.write_ahead(fits, ahead)
        returns = []
        try:
            for idx, (overrides, sweep_config) in enumerate(zip(job_overrides, sweep_configs)):
                log.info(f"\t#{initial_job_idx + idx} : {' '.join(filter_overrides(overrides))}")
                with fusion.supplied(fits.get(idx)):
                    returns.append(run_job(hydra_context=self.hydra_context, task_function=self.task_function,
                                           config=sweep_config, job_dir_key="hydra.sweep.dir",
                                           job_subdir_key="hydra.sweep.subdir"))
                configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        finally:
            from runner import background, tracking

            background.drop_idle()
            try:
                tracking.settle()  # the last jobs' runs, logged while the ones after them ran
            finally:
                shutil.rmtree(ahead, ignore_errors=True)
        return returns


def checked(settings: dict) -> dict:
    """The launcher's settings as runner/fusion.py takes them; a ConfigError line for a bad one."""
    import math

    from runner.errors import ConfigError
    from runner.inference.svi.fused import Pruning

    prune, keep, first, gb = (settings[k] for k in ("prune", "keep", "first", "max_memory_gb"))
    if prune is not None and prune not in PRUNE_RULES:
        raise ConfigError(f"hydra.launcher.prune must be one of {', '.join(PRUNE_RULES)} or null, got {prune!r}")
    if not (isinstance(keep, (int, float)) and 0 < keep < 1):
        raise ConfigError(f"hydra.launcher.keep must be a fraction between 0 and 1, got {keep!r}")
    if not (isinstance(first, (int, float)) and 0 < first < 1):
        raise ConfigError(f"hydra.launcher.first must be a fraction of the steps between 0 and 1, got {first!r}")
    if gb is not None and not (isinstance(gb, (int, float)) and math.isfinite(gb) and gb > 0):
        raise ConfigError(f"hydra.launcher.max_memory_gb must be a positive number of GB, got {gb!r}")
    return {"pruning": None if prune is None else Pruning(keep=float(keep), first=float(first)),
            "available": None if gb is None else int(gb * 2**30)}
