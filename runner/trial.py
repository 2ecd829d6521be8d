"""A search trial's side in its job (runner/search.py is the sweeper's): with a pruner, the job's
safe point becomes a `Reporter`, which the SVI fit's chunk loop (runner/inference/svi/loop.py)
hands its best loss `reports` times per fit, on the same steps in every trial. Each report goes to
the trial in the study's storage (this job may run in another process than the sweeper: joblib,
ray); a trial the pruner stops raises runner.errors.Pruned (runner.lifecycle ends the run KILLED
with the tag `pruned`, the sweeper tells the trial PRUNED)."""
from __future__ import annotations

import math


class Reporter:
    """A search trial's safe point with a pruner: the SVI fit reports its best loss `reports`
    times (runner/inference/svi/loop.py), each report goes to the trial in the study's storage,
    and a trial the pruner stops raises runner.errors.Pruned (the run ends KILLED, tagged
    `pruned`). Calling it is the run's own safe point (Ctrl-C)."""

    def __init__(self, trial: dict, safe_point):
        self.info, self.safe_point = trial, safe_point
        self.reports = int(trial["reports"])
        self._trial = None

    def __call__(self) -> None:
        self.safe_point()

    def trial(self):
        """The running trial, from the study's storage (its pruner: this job's hydra.sweeper.pruner)."""
        if self._trial is None:
            import optuna
            from hydra.core.hydra_config import HydraConfig
            from hydra.utils import instantiate

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            pruner = instantiate(HydraConfig.get().sweeper.pruner)
            study = optuna.load_study(study_name=self.info["study_name"], storage=self.info["storage"], pruner=pruner)
            found = [t for t in study.get_trials(deepcopy=False) if t.number == self.info["number"]]
            # Optuna's Trial of a trial id: FrozenTrial keeps it private (README: private APIs)
            self._trial = optuna.trial.Trial(study, found[0]._trial_id)
        return self._trial

    def report(self, step: int, best: float) -> None:
        from runner.errors import Pruned

        if not math.isfinite(best):
            return
        trial = self.trial()
        trial.report(float(best), step)
        if trial.should_prune():
            raise Pruned(step, float(best))
