"""Hydra multirun -> one parent run per sweep, one child run per job, and the sweep's aggregate.

`SweepCallback` is a Hydra callback (conf/config.yaml: hydra.callbacks). Before any job starts it
asks the tracking backend (runner.tracking, `sweep_started`) for the parent run and writes the
parent's id into the sweep directory (runner.job reads it), where every job finds it whatever
launcher runs it (basic, joblib, ray). When the sweep ends it aggregates the children's final
losses per configuration (across seeds, each config hash once) here, from the backend's
children or, with tracking=none, from the jobs' run directories, and hands the aggregate to the
backend for the parent (`sweep_completed`): one metric (`final_loss`, the best child's), tags
(the best run, counts of jobs), the per-configuration table as a table artifact.
Per-configuration numbers are never metric names: a tracking UI draws one chart per metric name,
and grouping the children by their tag `config_group` already draws mean and min/max over seeds.

Resume: each job's run carries a hash of its resolved config (tag `config_hash`); a job whose
hash already has a FINISHED run in the same sweep (a child of its parent) is skipped, unless
`rerun=true`; a plain run of the same config is not the sweep's and does not count. Running the
same sweep command again reuses its parent run (tag `sweep_hash`), so it ends with exactly one
FINISHED child per job.
"""
from __future__ import annotations

import collections
import json
import sys
from contextlib import contextmanager
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from runner.identity import digest, result_overrides, short_value


def parent_name(overrides) -> str:
    """`sweep <overrides>`, a file by its name (a long data.path would fill the runs table)."""
    shown = []
    for o in overrides:
        key, eq, value = o.partition("=")
        shown.append(f"{key}={','.join(short_value(key, v) for v in value.split(','))}" if eq else o)
    return f"sweep {' '.join(shown)}"[:250]


def launcher_of(config) -> str:
    """The sweep's Hydra launcher (basic, joblib, ray, ...): the same overrides through another
    launcher are another sweep (the README's Ray example after its joblib one runs its jobs)."""
    try:
        return str(config.hydra.runtime.choices.get("hydra/launcher") or "basic")
    except Exception:
        return "basic"


def count_jobs(overrides) -> int | None:
    """How many jobs a grid of these overrides makes (the product of the swept values' counts);
    None for a sweep that is not a grid (a range or an interval of Optuna's) or does not parse."""
    import math

    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides(list(overrides))
        return math.prod(len(list(o.sweep_string_iterator())) for o in parsed if o.is_sweep_override())
    except Exception:
        return None


def local_children(sweep_dir: Path) -> list[dict]:
    """A sweep's jobs read from their run directories (runner_status.json, metrics.json): the
    children, for a backend that keeps no runs (tracking=none)."""
    from runner.job import STATUS_FILE

    out = []
    for path in sorted(Path(sweep_dir).glob(f"*/{STATUS_FILE}")):
        status = json.loads(path.read_text())
        if status["status"] not in ("run", "failed"):
            continue
        row = {"run_id": status.get("run_id") or path.parent.name, "config_group": status.get("config_group", "(defaults)"),
               "status": "FINISHED" if status["status"] == "run" else "FAILED", "final_loss": status.get("final_loss"),
               "config_hash": status.get("config_hash"), "seed": status.get("seed"), "objective": status.get("objective")}
        metrics = path.parent / "metrics.json"
        if row["status"] == "FINISHED" and metrics.is_file():
            row["loss"] = json.loads(metrics.read_text()).get("curves", {}).get("loss")
        out.append(row)
    return out


def unique_children(children: list[dict], scored: bool = True) -> list[dict]:
    """One FINISHED child per config hash (a config and its seed): the earliest. The same sweep
    started twice at once, or a job run again by hand, must not count twice in the table.
    `scored`: only those with a final loss (a NUTS run has none: it is counted, never ranked)."""
    finished = [c for c in children if c["status"] == "FINISHED" and (c.get("final_loss") is not None or not scored)]
    kept: dict = {}
    for c in sorted(finished, key=lambda c: (c.get("start_time") or 0, c["run_id"])):
        kept.setdefault(c.get("config_hash") or c["run_id"], c)
    return list(kept.values())


TABLE_COLUMNS = ("config", "n", "seeds", "mean", "std", "min", "max", "best_run_id")


def aggregate(children: list[dict], counts: dict, by_objective: bool = True) -> tuple[dict, dict, list[dict]]:
    """The sweep's result: (metrics, tags, table). Metrics: `final_loss`, the best child's (the
    children's own metric name, so a parent adds no chart of its own in the UI and sweeps compare
    on it). Tags: the best child's run id and configuration, the counts of jobs. Table: one row
    per configuration (children grouped across seeds, each config hash once): n, seeds,
    mean/std/min/max of final_loss, the best run. Per-configuration numbers never become metric
    names: the UI's Group by (tag config_group) draws them from the children."""
    import numpy as np

    finished = unique_children(children)
    groups: dict[str, list] = {}
    for c in finished:
        groups.setdefault(c.get("config_group") or "(defaults)", []).append(c)
    table = []
    for label, runs in sorted(groups.items()):
        losses = np.array([r["final_loss"] for r in runs], dtype=float)
        best = runs[int(np.nanargmin(losses))] if np.isfinite(losses).any() else runs[0]
        seeds = sorted({str(r["seed"]) for r in runs if r.get("seed") is not None}, key=_seed_key)
        table.append({"config": label, "n": len(runs), "seeds": " ".join(seeds),
                      "mean": float(losses.mean()), "std": float(losses.std()), "min": float(losses.min()),
                      "max": float(losses.max()), "best_run_id": best["run_id"],
                      "run_ids": [r["run_id"] for r in runs]})
    tags = {f"jobs_{k}": int(v) for k, v in counts.items()}
    tags.update(children_finished=len(unique_children(children, scored=False)), configs=len(table))
    metrics = {}
    scored = [c for c in finished if np.isfinite(c["final_loss"])]
    # a search ranks its trials by the values its sampler was told (Optuna's best is the parent's)
    kind, ranked, apart = ranked_objective(scored) if by_objective else (None, scored, [])
    if not by_objective:  # a search that told its sampler a MAP loss and an ELBO as one value says so
        kinds = collections.Counter(c["objective"] for c in scored if c.get("objective"))
        if len(kinds) > 1:
            tags["mixed_objectives"] = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
    if ranked:
        best = min(ranked, key=lambda c: c["final_loss"])
        metrics["final_loss"] = float(best["final_loss"])
        tags.update(best_run_id=best["run_id"], best_config=best.get("config_group") or "(defaults)")
        if "mixed_objectives" in tags and best.get("objective"):
            tags["best_objective"] = best["objective"]
    if apart:  # final losses of another objective: not ranked with these (a MAP objective is no ELBO)
        other = min(apart, key=lambda c: c["final_loss"])
        tags.update(ranked_objective=kind, apart_objective=other.get("objective"),
                    apart_runs=len(apart), apart_best_final_loss=float(other["final_loss"]),
                    apart_best_run_id=other["run_id"], apart_best_config=other.get("config_group") or "(defaults)")
    return metrics, tags, table


#: which final losses a sweep ranks when its runs minimise different objectives: an ELBO first
RANKED_FIRST = ("elbo",)


def ranked_objective(scored: list[dict]) -> tuple[str | None, list, list]:
    """(the objective ranked, the runs ranked for the sweep's best, those of another objective). A negative ELBO and a
    negative log joint (the MAP objective of a Delta guide) are not the same number: ranking them
    together crowns the MAP fit. Runs that do not say their objective (EM, older runs) rank with
    the first kind."""
    kinds = {c.get("objective") for c in scored} - {None}
    if len(kinds) <= 1:
        return next(iter(kinds), None), scored, []
    first = next((k for k in RANKED_FIRST if k in kinds), sorted(kinds)[0])
    ranked = [c for c in scored if c.get("objective") in (first, None)]
    return first, ranked, [c for c in scored if c.get("objective") not in (first, None)]


def _seed_key(seed: str):
    return (0, int(seed), "") if seed.isdigit() else (1, 0, seed)


def description(overrides, jobs: int | None, result: dict | None = None) -> str:
    """The parent's description (its run note): what the sweep varied and held, how to see
    the mean and min/max over seeds per configuration in the UI, and (at the end) its result."""
    varied, fixed = split_overrides(overrides)
    lines = [f"Sweep of {jobs if jobs is not None else 'its'} jobs over "
             + (" x ".join(f"{k} ({', '.join(v)})" for k, v in varied) or "one configuration")
             + (f"; fixed: {' '.join(fixed)}" if fixed else "") + ".",
             "Each child run is tagged `config_group` (its overrides without the seed) and `seed`: "
             "in the runs table or the chart view, Group by -> tag config_group draws the mean and "
             "min/max over seeds per configuration. The table per configuration is the artifact "
             f"`{TABLE_FILE}`."]
    if result and result.get("best_run_id"):
        lines.append(f"Best final_loss {result['final_loss']:.6g}: run {result['best_run_id']} "
                     f"({result['best_config']}).")
    return "\n\n".join(lines)


def split_overrides(overrides) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """([(key, values)] of the swept overrides, [the fixed overrides]), as Hydra parses them."""
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:
        return [], list(overrides)
    varied, fixed = [], []
    for o in parsed:
        if o.is_sweep_override() and not (o.is_choice_sweep() or o.is_range_sweep()):  # interval(...): a search's
            varied.append((o.get_key_element(), [o.input_line.split("=", 1)[1]]))
        elif o.is_sweep_override():
            varied.append((o.get_key_element(), [short_value(o.get_key_element(), str(v))
                                                 for v in o.sweep_string_iterator()]))
        else:
            fixed.append(f"{o.get_key_element()}={short_value(o.get_key_element(), o.get_value_element_as_str())}")
    return varied, fixed


TABLE_FILE = "sweep_table.json"


def table_frame(table: list[dict]) -> dict:
    """The table column by column (column -> values), numbers to 6 significant
    digits as a person reads them (summary.json keeps them whole)."""
    return {c: [float(f"{row[c]:.6g}") if isinstance(row[c], float) else row[c] for row in table]
            for c in TABLE_COLUMNS}


def finish(backend, parent_id, sweep_dir: Path, counts: dict, overrides=(), jobs: int | None = None) -> dict:
    """The sweep's aggregate: summary.json and plots/final_losses.png under <sweep dir>/sweep;
    onto the parent run the best final loss, tags, the table (a table artifact) and the files;
    the parent ends FINISHED."""
    from runner import figures
    from runner.tracking.base import SweepResult

    children = backend.children(parent_id)
    if children is None:
        children = local_children(sweep_dir)
    from runner.job import TRIALS

    metrics, tags, table = aggregate(children, counts, by_objective=not (Path(sweep_dir) / TRIALS).is_dir())
    out = Path(sweep_dir) / "sweep"
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(table, indent=1))
    kept = {c["run_id"] for c in unique_children(children)}
    curves = {c["run_id"]: c["loss"] for c in children if c.get("loss") and c["run_id"] in kept}
    drawn = figures.sweep_plot(table, dict(list(curves.items())[:50]), out / "plots" / "final_losses.png")
    from runner.redact import redact

    files = ["summary.json", *(["plots/final_losses.png"] if drawn else [])]
    files += loo_files(sweep_dir, out)
    view = backend.sweep_completed(parent_id, SweepResult(
        scalars=metrics, tags=tags, description=redact(description(overrides, jobs, {**tags, **metrics}))[:5000],
        table=table_frame(table), table_file=TABLE_FILE, artifact_dir=out, artifacts=files))
    return {"children": tags["children_finished"], "groups": table, **metrics, **tags, **({"view": view} if view else {})}


def loo_files(sweep_dir: Path, out: Path) -> list[str]:
    """loo.json / loo.txt: the jobs ranked by PSIS-LOO (runner/loo.py), where at least two jobs
    on the same data left an inference_data.nc; a failure here never fails the sweep."""
    try:
        from runner import loo
        from runner.job import STATUS_FILE

        rows = loo.sweep_table(sweep_dir, STATUS_FILE)
        return loo.write(rows, out) if rows else []
    except Exception as e:  # (an unreadable file, an ArviZ error): the table is left out, said once
        import sys

        print(f"runner: note: no LOO table for the sweep ({type(e).__name__}: {e})", file=sys.stderr)
        return []


def sweep_start(config, sweep_dir: Path):
    """(what the parent run is opened with, the job count). A grid: named after its overrides,
    the same overrides through the same launcher are the same sweep. An Optuna search
    (runner/search.py): named after its study, the same study (name and storage) is the same sweep,
    whatever its launcher; the job count is the command's n_trials. A search that cannot start
    (nothing to search, a bad range) is one line, exit 2, before any run is opened."""
    from runner.errors import ConfigError
    from runner.redact import redact
    from runner.search import describe, parent_tags, study_of
    from runner.tracking.base import SweepStart

    overrides = result_overrides(config.hydra.overrides.task)
    experiment = config.tracking.get("experiment")
    tags = {"sweep_overrides": redact(" ".join(overrides)), "sweep_dir": str(sweep_dir)}
    try:
        study = study_of(config)
    except ConfigError as e:
        print(f"runner: error: {redact(str(e))}", file=sys.stderr)
        raise SystemExit(2) from None
    if study is not None:
        return SweepStart(
            name=redact(f"study {study['study_name']}")[:250], reuse=not config.get("rerun", False),
            sweep_hash=digest({"study": study["study_name"], "storage": study["storage"], "experiment": experiment}),
            tags={**tags, **parent_tags(study)}, description=redact(describe(study))[:5000]), study["n_trials"]
    jobs = count_jobs(config.hydra.overrides.task)
    return SweepStart(
        name=redact(parent_name(overrides)), reuse=not config.get("rerun", False),
        sweep_hash=digest({"overrides": sorted(overrides), "experiment": experiment, "launcher": launcher_of(config)}),
        tags=tags, description=redact(description(overrides, jobs))[:5000]), jobs


IN_PROCESS_LAUNCHERS = ("basic", "vectorized")  # the jobs run in this process (the others: elsewhere)


@contextmanager
def importing_while_waiting(config, backend):
    """While the tracking worker imports MLflow and opens the store for the sweep's parent run
    (seconds, on its own core), this process imports what its jobs will fit with (JAX, NumPyro,
    Optax) and write their files with (h5netcdf) in a background thread, joined before the block
    ends: no module imported by two threads at once (this thread waits meanwhile). Only where
    this process runs the jobs, something is waited for, and the jobs set no JAX_* variable of
    their own (hydra.job.env_set: JAX reads them as it is imported, in the job)."""
    from omegaconf import OmegaConf

    from runner import background
    from runner.tracking.worker import Background

    env = OmegaConf.select(config, "hydra.job.env_set") or {}
    if (launcher_of(config) not in IN_PROCESS_LAUNCHERS or not isinstance(backend, Background)
            or any(str(k).startswith("JAX_") for k in env)):
        yield
        return

    def load():
        try:
            import jax  # noqa: F401
            import numpyro.infer  # noqa: F401
            import optax  # noqa: F401
        except Exception:  # a job's own import says what is wrong
            pass
        from runner import outputs

        outputs.load()  # and what writes each job's files

    background.start("runner-jax-import", load)
    yield  # (a store that fails: its one line at once, the thread not waited for)
    background.settled()


class SweepCallback(Callback):
    """conf/config.yaml's hydra.callbacks.runner_sweep: the parent run before the jobs, the
    aggregate after them. A sweep with a failed job (or whose summary failed) ends the command
    with exit code 1 (SystemExit: Hydra reports a callback's other exceptions as warnings)."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from runner.lifecycle import resume_gc

        try:
            self.open_parent(config)
        finally:  # (Hydra turns a callback's error into a warning and the sweep goes on)
            resume_gc()  # the CLI's imports done: a sweep's parent may wait for hours (its jobs elsewhere)

    def open_parent(self, config: DictConfig) -> None:
        """The parent run before the jobs (on_multirun_start)."""
        import shutil

        from runner.job import SWEEP_FILE, TRIALS
        from runner.lifecycle import SIGNALS
        from runner.redact import redact_folder
        from runner.tracking import from_config

        if config.get("resume") is not None:  # before anything is created: no folder, no parent run
            print("runner: error: resume= continues one run: run it without -m", file=sys.stderr)
            raise SystemExit(2)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(sweep_dir / TRIALS, ignore_errors=True)  # an earlier search's in the same folder
        backend = from_config(config.tracking)
        backend.check()
        start, jobs = sweep_start(config, sweep_dir)
        with importing_while_waiting(config, backend):
            parent_id, reused = backend.sweep_started(start)
            # the parent ends KILLED if the command is interrupted, also while the imports finish
            # (nothing kept on the callback: a launcher pickles it with the jobs)
            SIGNALS.at_stop[str(sweep_dir)] = lambda error=None: (backend.sweep_failed(parent_id, error) if error
                                                                  else backend.sweep_killed(parent_id))
            # every job reads the parent's id here, whatever launcher runs it
            (sweep_dir / SWEEP_FILE).write_text(json.dumps({"parent_run_id": parent_id, "reused": reused,
                                                            "jobs": jobs}))
            redact_folder(sweep_dir)  # Hydra's multirun.yaml
        if parent_id:
            print(f"runner: sweep parent run {parent_id}" + (" (resumed)" if reused else ""))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from runner.job import STATUS_FILE, read_sweep
        from runner.lifecycle import SIGNALS
        from runner.redact import redact, redact_folder
        from runner.tracking import from_config

        sweep_dir = Path(config.hydra.sweep.dir)
        redact_folder(sweep_dir)  # Hydra's multirun.yaml is written after on_multirun_start
        info = read_sweep(sweep_dir)
        if info is None:
            return
        SIGNALS.at_stop.pop(str(sweep_dir), None)
        backend, parent_id = from_config(config.tracking), info["parent_run_id"]
        statuses = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob(f"*/{STATUS_FILE}"))]
        counts = {s: sum(1 for x in statuses if x["status"] == s) for s in ("run", "skipped", "failed", "pruned")}
        if not counts["pruned"]:  # (a search's trials stopped by its pruner)
            del counts["pruned"]
        try:
            summary = finish(backend, parent_id, sweep_dir, counts,
                             result_overrides(config.hydra.overrides.task), info.get("jobs"))
        except Exception as e:  # the parent must not stay RUNNING
            error = redact(f"{type(e).__name__}: {e}")
            try:
                backend.sweep_failed(parent_id, error[:500])
            finally:
                print(f"runner: error: summarising the sweep failed ({error}); parent run {parent_id} is FAILED",
                      file=sys.stderr)
            raise SystemExit(1) from None
        said(summary, statuses, counts, parent_id, sweep_dir)
        if counts["failed"]:
            print(f"runner: error: {counts['failed']} job(s) of the sweep failed (see above and {STATUS_FILE} "
                  "in their directories)", file=sys.stderr)
            raise SystemExit(1)


def said(summary: dict, statuses: list, counts: dict, parent_id: str | None, sweep_dir: Path) -> None:
    """The sweep's two lines: what ran, and the best configuration (and each job's calibration,
    check=sbc)."""
    under = f" under parent {parent_id}" if parent_id else f" in {sweep_dir}"
    pruned = f", {counts['pruned']} pruned" if counts.get("pruned") else ""
    print(f"runner: sweep done: {len(statuses)} jobs, {counts['run']} run, {counts['skipped']} skipped, "
          f"{counts['failed']} failed{pruned}; {summary['children']} finished child runs{under}")
    for s in statuses:  # check=sbc: each job's calibration, so that configs compare by it (not only by loss)
        if s.get("status") == "run" and s.get("calibration"):
            run = f" (run {s['run_id']})" if s.get("run_id") else ""
            print(f"runner: sweep calibration {s.get('config_group', '(defaults)')}: {s['calibration']}{run}")
    if summary.get("best_run_id"):
        kind = summary["ranked_objective"] if summary.get("apart_runs") else summary.get("best_objective")
        kind = f" ({kind.upper()})" if kind else ""
        print(f"runner: sweep best final_loss={summary['final_loss']:.6g}{kind} {summary['best_config']} "
              f"(run {summary['best_run_id']})")
    if summary.get("view"):
        print(f"runner: sweep charts, grouped by config: {summary['view']}")
    if summary.get("mixed_objectives"):
        ranks = f"python -m runner.compare --sweep {parent_id[:8]}" if parent_id else "python -m runner.compare"
        print("runner: warning: the search's trials minimise different objectives (runs per objective: "
              f"{summary['mixed_objectives']}): its sampler compared a MAP loss (a negative log joint) with "
              f"negative ELBOs as one value; search one kind of guide per study ({ranks} ranks them apart)",
              file=sys.stderr)
    if summary.get("apart_runs"):
        print(f"runner: sweep: {summary['apart_runs']} run(s) minimise the {summary['apart_objective'].upper()} "
              f"objective, not the {summary['ranked_objective'].upper()}: ranked apart, best final_loss="
              f"{summary['apart_best_final_loss']:.6g} {summary['apart_best_config']} (run {summary['apart_best_run_id']})")
