"""`hydra/sweeper=optuna`: an Optuna study (a maintained Optuna, studies in any RDB storage) driven
through Hydra by runner's own sweeper, on Optuna's ask/tell. The Hydra plugin class is
hydra_plugins/runner_optuna_sweeper/optuna_sweeper.py (Hydra instantiates sweepers only from the
`hydra_plugins` package); everything it does is here. Spelled as Hydra's Optuna sweeper:
`hydra.sweeper.{n_trials, n_jobs, direction, storage, study_name, sampler, params}`, the ranges
`interval(a,b)`, `tag(log, interval(a,b))`, `range(a,b[,step=s])`, `choice(a,b,...)` in `params`
or on the command line; every other override is held fixed.

- The study is the sweep: runner.sweep's callback names the parent run after it (`study_of`,
  which the sweeper and the callback share), so one parent per study, and a stored study run again
  reuses its parent. Each trial is a job of the launcher (basic, joblib, ray), a child run tagged
  `trial_number` and `study_name`; its number reaches the job in <sweep dir>/trials/<job>.json.
- The objective is what the job returns: the logged `final_loss` (with replicates, their mean);
  a job skipped for a finished twin (the same config in this study's parent) returns the twin's.
- After each batch the best trial so far is tagged on the parent (`best_trial`, `best_value`,
  `best_params`, `best_trial_run_id`); the trial's run id is the trial's user attribute `run_id`.
- Ctrl-C (or a failing launcher): the batch's trials are told FAIL before the command stops; a
  trial left RUNNING by a process that is gone (SIGKILL) is told FAIL by the next command.
- Pruning (`hydra/sweeper/pruner=median`): the job's safe point becomes a `Reporter` (runner/trial.py), which the
  SVI fit's chunk loop (runner/inference/svi/loop.py) hands its best loss `reports` times per fit,
  on the same steps in every trial; a trial the pruner stops ends its run KILLED with the tag
  `pruned`, and the trial PRUNED.
"""
from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from hydra.plugins.sweeper import Sweeper

from runner.errors import ConfigError
from runner.tracking.worker import alive, host

#: the Hydra plugin's module: a sweeper config whose _target_ starts so is runner's search
PLUGIN = "hydra_plugins.runner_optuna_sweeper."


@dataclass(frozen=True)
class Settings:
    """hydra.sweeper's keys (conf/hydra/sweeper/optuna.yaml), the sampler and pruner instantiated."""
    sampler: object = None
    pruner: object = None
    direction: str = "minimize"
    storage: str | None = None
    study_name: str | None = None
    n_trials: int = 20
    n_jobs: int = 1
    max_failure_rate: float = 1.0
    reports: int = 10
    params: object = None


def storage_url(storage) -> str | None:
    """An RDB URL with a relative sqlite path made absolute here (the driver's folder): every
    job, on whatever launcher, and the next command find the same file."""
    if not storage:
        return None
    url = str(storage)
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url[len(prefix):].startswith("/") and ":memory:" not in url:
        return prefix + os.path.abspath(url[len(prefix):])
    return url


def search_lines(node, task_overrides) -> list[str]:
    """The search's overrides: hydra.sweeper.params as `key=value` lines, then the command line's."""
    params = node.get("params") or {}
    return [f"{k}={v}" for k, v in params.items()] + list(task_overrides)


def split_search(lines) -> tuple[dict, list[str]]:
    """({key: range as typed} of the searched overrides, [the fixed overrides as typed]); a later
    line for the same key wins (the command line over params). ConfigError for a bad override."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(lines))
    except HydraException as e:
        raise ConfigError(f"hydra.sweeper.params: {e}".splitlines()[0]) from None
    space, fixed = {}, {}
    for o in parsed:
        key = o.get_key_element()
        if o.is_sweep_override():
            space[key] = o.input_line.split("=", 1)[1]
            fixed.pop(key, None)
        else:
            fixed[key] = o.input_line
            space.pop(key, None)
    return space, list(fixed.values())


def study_of(config) -> dict | None:
    """The study a multirun is, when its sweeper is runner's Optuna one (else None): name,
    storage, direction, search space (key -> range as typed), fixed overrides, trials per command.
    A study without a name is named after its search (ranges, the fixed overrides that change a
    result, the experiment): the same command continues the same stored study."""
    from runner.identity import digest, result_overrides

    node = config.hydra.sweeper
    if not str(node.get("_target_", "")).startswith(PLUGIN):
        return None
    space, fixed = split_search(search_lines(node, config.hydra.overrides.task))
    if not space:
        raise ConfigError("hydra/sweeper=optuna has nothing to search: give a range, e.g. "
                          "'optim.lr=tag(log, interval(0.001, 0.3))' (or hydra.sweeper.params)")
    experiment = config.tracking.get("experiment") if "tracking" in config else None
    name = node.get("study_name") or "runner-" + digest(
        {"space": space, "fixed": sorted(result_overrides(fixed)), "experiment": experiment})[:10]
    return {"study_name": str(name), "storage": storage_url(node.get("storage")), "space": space, "fixed": fixed,
            "direction": str(node.get("direction", "minimize")), "n_trials": int(node.get("n_trials", 20))}


def parent_tags(study: dict) -> dict:
    """The study on its parent run: name, storage, direction, and one tag per searched key."""
    from runner.redact import redact

    return {"study_name": study["study_name"], "study_storage": redact(study["storage"] or "(in memory)"),
            "study_direction": study["direction"], **{f"search.{k}": v for k, v in study["space"].items()}}


def describe(study: dict) -> str:
    """The parent's description: what the study searches and holds."""
    from runner.redact import redact

    space = " x ".join(f"{k} ({v})" for k, v in study["space"].items())
    fixed = f"; fixed: {' '.join(study['fixed'])}" if study["fixed"] else ""
    return (f"Optuna study {study['study_name']} ({redact(study['storage'] or 'in memory')}), "
            f"{study['direction']} final_loss: {study['n_trials']} trials per command over {space}{fixed}. "
            "Each child run is a trial (tag trial_number); the best so far is tagged best_trial, best_value.")


def distribution(override):
    """An Optuna distribution of a Hydra sweep override, as Hydra's Optuna sweeper maps them:
    choice -> categorical; range(a,b[,step]) -> int (or float) from a to b; interval(a,b) ->
    uniform, tag(log, interval(a,b)) -> log-uniform (int when both ends are)."""
    from hydra.core.override_parser.types import Transformer
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():
        if any(isinstance(x, float) for x in (value.start, value.stop, value.step)):
            return FloatDistribution(float(value.start), float(value.stop), step=float(value.step) if value.step else None)
        return IntDistribution(int(value.start), int(value.stop), step=int(value.step or 1))
    if override.is_interval_sweep():
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise ConfigError(f"{override.input_line}: not a range Optuna can search (choice, range, interval)")


def distributions(space: dict) -> dict:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in space.items()])
    return {o.get_key_element(): distribution(o) for o in parsed}


def suggest(trial, name: str, dist):
    """The trial's value of `name`, through Optuna's public suggest API."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def override_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else repr(value) if isinstance(value, float) else str(value)


class Search(Sweeper):
    """The sweeper (hydra_plugins.runner_optuna_sweeper.optuna_sweeper.OptunaSweeper is this)."""

    def __init__(self, **settings):
        from runner.extras import require

        require("hydra/sweeper", "optuna")  # the `optuna` extra (a config file may choose this sweeper)
        self.settings = Settings(**settings)
        if self.settings.direction not in ("minimize", "maximize"):
            raise ConfigError(f"hydra.sweeper.direction must be minimize or maximize, got {self.settings.direction!r}")
        self.job_idx = 0

    def setup(self, *, hydra_context, task_function, config) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)
        self.sweep_dir = Path(config.hydra.sweep.dir)

    def sweep(self, arguments: list[str]) -> None:
        """The study's trials, `n_trials` of them in batches of `n_jobs`; an error that is not an
        interruption ends the parent FAILED in one line (never RUNNING)."""
        from runner.job import read_sweep
        from runner.lifecycle import SIGNALS

        self.parent_id = (read_sweep(self.sweep_dir) or {}).get("parent_run_id")
        try:
            study, info = self.open_study()
            self.run_trials(study, info)
            self.results(study)
        except BaseException as e:
            if SIGNALS.exit_code(e) is not None or isinstance(e, SystemExit):
                raise
            self.failed(e)

    def failed(self, error: BaseException) -> None:
        from runner.errors import describe as said
        from runner.redact import redact
        from runner.tracking import from_config

        message = redact(said(error))
        try:
            from_config(self.config.tracking).sweep_failed(self.parent_id, message[:500])
        finally:
            print(f"runner: error: the Optuna search failed: {message}", file=sys.stderr)
        raise SystemExit(2 if isinstance(error, ConfigError) else 1)

    def open_study(self):
        """The study (created, or loaded to continue), its trials left RUNNING by a gone process FAIL."""
        import optuna

        info = study_of(self.config)
        info["dists"] = distributions(info["space"])
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        s = self.settings
        study = optuna.create_study(study_name=info["study_name"], storage=info["storage"], sampler=sampler(s.sampler, 0),
                                    pruner=s.pruner, direction=s.direction, load_if_exists=True)
        fail_orphans(study)
        done = len(study.trials)
        study.sampler = sampler(s.sampler, done)
        from runner.redact import redact

        print(f"runner: Optuna study {study.study_name} in {redact(info['storage'] or 'memory')}: "
              f"{done} trials so far, {s.n_trials} more")
        return study, info

    def run_trials(self, study, info: dict) -> None:
        import optuna

        from runner.lifecycle import SIGNALS

        s = self.settings
        to_go, failures, told = s.n_trials, 0, 0
        while to_go > 0 and not (told and failures / told > s.max_failure_rate):
            trials, returns = [], []
            try:  # Ctrl-C anywhere in here: no trial of the batch is left RUNNING (see `stopped`)
                trials.extend(study.ask() for _ in range(min(to_go, max(1, s.n_jobs))))
                overrides = [self.configure(t, info, self.job_idx + i) for i, t in enumerate(trials)]
                returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
                # a signal while the study is told waits, then stops the search: raised inside Optuna's
                # tell it can leave the trial RUNNING (seen once: Ctrl-C just after a trial's line)
                with SIGNALS.logging():
                    for trial, ret in zip(trials, returns):
                        failures += self.told(study, trial, ret) == optuna.trial.TrialState.FAIL
                SIGNALS.safe_point()
            except BaseException as e:
                self.stopped(study, trials, returns, e)
                raise
            self.job_idx += len(returns)
            told += len(trials)
            to_go -= len(trials)
            self.best_to_parent(study)

    def stopped(self, study, trials: list, returns: list, error: BaseException) -> None:
        """The batch was interrupted (or its launcher failed): a trial whose job ended is told how
        (a signal may come after the job, before its trial is told), the others FAIL; a signal
        meanwhile waits."""
        import optuna

        from runner.lifecycle import SIGNALS

        with SIGNALS.logging():
            for i, trial in enumerate(trials):
                try:
                    if i < len(returns):
                        self.told(study, trial, returns[i])
                    elif not self.told_by_folder(study, trial, self.sweep_dir / str(self.job_idx + i)):
                        tell(study, trial, optuna.trial.TrialState.FAIL, note=f"{type(error).__name__} {error}"[:200])
                except Exception:
                    pass

    def told_by_folder(self, study, trial, folder: Path) -> bool:
        """A job that ended before the launcher could return it (the signal came as Hydra closed
        the job): its status file says how; True if it said enough to tell the trial."""
        import optuna

        from runner.job import STATUS_FILE

        path = folder / STATUS_FILE
        status = json.loads(path.read_text()) if path.is_file() else {}
        value = status.get("final_loss")
        if status.get("status") in ("run", "skipped") and value is not None and math.isfinite(float(value)):
            if status.get("run_id"):
                set_attr(trial, "run_id", status["run_id"])
            tell(study, trial, optuna.trial.TrialState.COMPLETE, value=float(value))
            return True
        if status.get("status") == "pruned":
            tell(study, trial, optuna.trial.TrialState.PRUNED)
            return True
        return False

    def configure(self, trial, info: dict, job: int) -> list[str]:
        """The trial's overrides (its values, then the fixed ones), and its file for job `job`."""
        from runner.job import TRIALS

        values = {k: suggest(trial, k, d) for k, d in info["dists"].items()}
        trial.set_user_attr("runner.host", host())
        trial.set_user_attr("runner.pid", os.getpid())
        folder = self.sweep_dir / TRIALS
        folder.mkdir(parents=True, exist_ok=True)
        pruning = type(self.settings.pruner).__name__ not in ("NopPruner", "NoneType")
        (folder / f"{job}.json").write_text(json.dumps({
            "number": trial.number, "study_name": info["study_name"], "storage": info["storage"],
            "reports": int(self.settings.reports) if pruning and info["storage"] else 0}))
        return [f"{k}={override_value(v)}" for k, v in values.items()] + list(info["fixed"])

    def told(self, study, trial, ret):
        """Tell the study how the trial's job ended (its runner_status.json and return value)."""
        import optuna
        from hydra.core.utils import JobStatus

        from runner.job import STATUS_FILE

        status_file = Path(ret.hydra_cfg.hydra.runtime.output_dir) / STATUS_FILE
        status = json.loads(status_file.read_text()) if status_file.is_file() else {}
        if status.get("run_id"):
            set_attr(trial, "run_id", status["run_id"])
        if status.get("status") == "skipped":
            set_attr(trial, "skipped_for", status.get("run_id"))
        if status.get("status") == "pruned":
            return tell(study, trial, optuna.trial.TrialState.PRUNED)
        value = ret.return_value if ret.status == JobStatus.COMPLETED else None
        if value is None or not math.isfinite(float(value)):
            return tell(study, trial, optuna.trial.TrialState.FAIL, note=status.get("error"))
        return tell(study, trial, optuna.trial.TrialState.COMPLETE, value=float(value))

    def best_to_parent(self, study) -> None:
        """The best trial so far, onto the parent (the whole study's, earlier commands too)."""
        from runner.tracking import from_config

        best = best_trial(study)
        if best is None or not self.parent_id:
            return
        from_config(self.config.tracking).sweep_updated(self.parent_id, {
            "best_trial": best.number, "best_value": repr(best.value), "best_params": json.dumps(best.params),
            "best_trial_run_id": best.user_attrs.get("run_id", ""), "trials": len(study.trials)})

    def results(self, study) -> None:
        """optimization_results.yaml in the sweep folder (as Hydra's Optuna sweeper), one line."""
        from omegaconf import OmegaConf

        best = best_trial(study)
        if best is None:
            print(f"runner: Optuna study {study.study_name}: no trial completed")
            return
        OmegaConf.save(OmegaConf.create({"name": "optuna", "study_name": study.study_name, "best_trial": best.number,
                                         "best_params": best.params, "best_value": best.value}),
                       self.sweep_dir / "optimization_results.yaml")
        print(f"runner: Optuna study {study.study_name}: best value {best.value:.6g} at trial {best.number} "
              f"({' '.join(f'{k}={override_value(v)}' for k, v in best.params.items())})")


def sampler(made, done: int):
    """The study's sampler (conf/hydra/sweeper/sampler/*.yaml are partial: built here). A seeded one
    continuing a stored study of `done` trials is seeded `seed + done`: seeded as the first command
    was, it would draw that command's values again (each then skipped as a finished twin)."""
    import functools

    if not isinstance(made, functools.partial):
        return made
    seed = made.keywords.get("seed")
    return made() if seed is None else made(seed=int(seed) + done)


def best_trial(study):
    import optuna

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not done:
        return None
    return study.best_trial


def set_attr(trial, key: str, value) -> None:
    """A user attribute of a running trial (one told already keeps what it has)."""
    try:
        trial.set_user_attr(key, value)
    except (RuntimeError, ValueError):
        pass


def tell(study, trial, state, value: float | None = None, note: str | None = None):
    """Tell `state` (and the value); a trial told already is left as it is."""
    if note and not isinstance(trial, int):
        set_attr(trial, "runner.note", str(note)[:500])
    try:
        study.tell(trial, state=state, values=None if value is None else [value])
    except (RuntimeError, ValueError):
        pass
    return state




def fail_orphans(study) -> None:
    """Trials left RUNNING by a command of this host that is gone (SIGKILL): FAIL, so that the
    study's counts and samplers do not wait for them."""
    import optuna

    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        pid = t.user_attrs.get("runner.pid")
        if t.user_attrs.get("runner.host") == host() and isinstance(pid, int) and not alive(pid):
            tell(study, t.number, optuna.trial.TrialState.FAIL)
