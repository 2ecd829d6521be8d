"""Hydra multirun -> one parent run per sweep, one child run per job, and the sweep's aggregate.

`SweepCallback` is a Hydra callback (conf/config.yaml: hydra.callbacks). Before any job starts it
asks the tracking backend (runner.tracking) for the parent run (MLflow: the store, experiment
and parent are created under a file lock, since several processes creating a fresh sqlite store
at once crash in its schema migration) and writes the parent's id into the sweep directory,
where every job finds it whatever launcher runs it (basic, joblib, ray). When the sweep ends it
aggregates the children's final losses per configuration (across seeds) here, from the
backend's children or, with tracking=none, from the jobs' run directories, and hands the
aggregate to the backend for the parent.

Resume: each job's run carries a hash of its resolved config (tag `config_hash`); a job whose
hash already has a FINISHED run in the experiment is skipped, unless `rerun=true`. Running the
same sweep command again reuses its parent run (tag `sweep_hash`), so it ends with exactly one
FINISHED child per job.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

SWEEP_FILE = "mlflow_sweep.json"
#: jobs that failed in the last sweep of this process (runner.__main__ exits 1 when > 0)
FAILED_JOBS = 0
#: the running sweep's parent (tracking config, parent_run_id), for ending it KILLED on Ctrl-C
CURRENT: dict = {}
STATUS_FILE = "runner_status.json"
#: config keys that do not change a fit's result, left out of its hash
NOT_HASHED = ("tracking", "jax", "rerun", "hydra", "progress")


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_hash(cfg: DictConfig) -> str:
    """The resolved config (less where it is logged), and the contents of the files it names: the
    data file and a function model's source, so an edited model or data set is not 'already run'."""
    data = OmegaConf.to_container(cfg, resolve=True)
    kept = {k: v for k, v in data.items() if k not in NOT_HASHED}
    files = {key: file_digest(path) for key, path in named_files(data).items()}
    return _digest({**kept, "_files": files} if files else kept)


def named_files(data: dict) -> dict:
    """data.path and model.fn's source file, where they are files."""
    out = {}
    path = (data.get("data") or {}).get("path")
    if isinstance(path, str) and Path(path).expanduser().is_file():
        out["data.path"] = Path(path).expanduser()
    fn = (data.get("model") or {}).get("fn")
    if isinstance(fn, str) and "." in fn:
        import importlib.util

        try:  # finds the module's file; a top-level module is not run (a package's __init__ is)
            spec = importlib.util.find_spec(fn.rpartition(".")[0])
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin and Path(spec.origin).is_file():
            out["model.fn"] = Path(spec.origin)
    return out


def file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:16]


def result_overrides(overrides) -> list[str]:
    """Overrides that can change a result (not where it is logged or cached)."""
    return [o for o in overrides if not re.match(r"^[+~]*(tracking[.=]|jax[.=]|rerun=|progress=|hydra)", o)]


def group_label(overrides) -> str:
    """A job's overrides without its seed: the configuration that seeds are replicates of."""
    kept = [o for o in result_overrides(overrides) if not re.match(r"^[+~]*seed=", o)]
    return " ".join(sorted(kept)) or "(defaults)"


def backend(tracking):
    """The tracking backend of a tracking config node (or of its container, as stored in the
    sweep file)."""
    from omegaconf import OmegaConf

    from runner.tracking import from_config

    return from_config(tracking if isinstance(tracking, DictConfig) else OmegaConf.create(tracking))


def kill_current() -> None:
    """Ctrl-C / SIGTERM during a sweep: its parent run ends KILLED (the jobs that finished stay)."""
    if not CURRENT:
        return
    try:
        tracker = backend(CURRENT["tracking"])
        tracker.run_id = CURRENT.pop("parent_run_id")
        tracker.end("KILLED", children=True)  # jobs in launcher processes (joblib, ray) that were running
    except Exception:
        pass


def count_jobs(overrides) -> int | None:
    """How many jobs Hydra's basic sweeper makes of these overrides (None if they do not parse)."""
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(list(overrides)), None)
        return sum(len(b) for b in batches)
    except Exception:
        return None


def read_sweep(sweep_dir) -> dict | None:
    path = Path(sweep_dir) / SWEEP_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def local_children(sweep_dir: Path) -> list[dict]:
    """A sweep's jobs read from their run directories (runner_status.json, metrics.json): the
    children, for a backend that keeps no runs (tracking=none)."""
    out = []
    for path in sorted(Path(sweep_dir).glob(f"*/{STATUS_FILE}")):
        status = json.loads(path.read_text())
        if status["status"] not in ("run", "failed"):
            continue
        row = {"run_id": status.get("run_id") or path.parent.name, "config_group": status.get("config_group", "(defaults)"),
               "status": "FINISHED" if status["status"] == "run" else "FAILED", "final_loss": status.get("final_loss")}
        metrics = path.parent / "metrics.json"
        if row["status"] == "FINISHED" and metrics.is_file():
            row["loss"] = json.loads(metrics.read_text()).get("curves", {}).get("loss")
        out.append(row)
    return out


def aggregate(children: list[dict], counts: dict) -> tuple[dict, list[dict]]:
    """Per configuration (children grouped across seeds): mean/std/min/n of final_loss, as
    scalars for the parent (`final_loss_<stat>/<config>`, jobs_<status>, children_finished) and
    as a table (one row per configuration, with its run ids)."""
    import numpy as np

    from runner.tracking.base import metric_safe

    finished = [c for c in children if c["status"] == "FINISHED" and c.get("final_loss") is not None]
    groups: dict[str, list] = {}
    for c in finished:
        groups.setdefault(c.get("config_group") or "(defaults)", []).append(c)
    scalars, table = {}, []
    for label, runs in sorted(groups.items()):
        losses = np.array([r["final_loss"] for r in runs], dtype=float)
        stats = {"mean": float(losses.mean()), "std": float(losses.std()), "min": float(losses.min()),
                 "n": len(losses)}
        table.append({"config": label, **stats, "run_ids": [r["run_id"] for r in runs]})
        scalars.update({f"final_loss_{k}/{metric_safe(label)}": v for k, v in stats.items()})
    scalars.update({f"jobs_{k}": float(v) for k, v in counts.items()})
    scalars["children_finished"] = float(len(finished))
    return scalars, table


def finish(tracker, parent_id, sweep_dir: Path, counts: dict) -> dict:
    """The sweep's aggregate: summary.json and plots/final_losses.png under <sweep dir>/sweep,
    the scalars and files onto the parent run; the parent ends FINISHED."""
    from runner import plots

    children = tracker.children(parent_id)
    if children is None:
        children = local_children(sweep_dir)
    scalars, table = aggregate(children, counts)
    out = Path(sweep_dir) / "sweep"
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(table, indent=1))
    curves = {c["run_id"]: c["loss"] for c in children if c.get("loss")}
    drawn = plots.sweep_plot(table, dict(list(curves.items())[:50]), out / "plots" / "final_losses.png")
    files = ["summary.json", *(["plots/final_losses.png"] if drawn else [])]
    files += loo_files(sweep_dir, out)
    tracker.finish_parent(parent_id, scalars=scalars, artifact_dir=out, artifacts=files)
    return {"children": int(scalars["children_finished"]), "groups": table}


def loo_files(sweep_dir: Path, out: Path) -> list[str]:
    """loo.json / loo.txt: the jobs ranked by PSIS-LOO (runner/loo.py), where at least two jobs
    on the same data left an inference_data.nc; a failure here never fails the sweep."""
    try:
        from runner import loo

        rows = loo.sweep_table(sweep_dir, STATUS_FILE)
        return loo.write(rows, out) if rows else []
    except Exception as e:  # (an unreadable file, an ArviZ error): the table is left out, said once
        import sys

        print(f"runner: note: no LOO table for the sweep ({type(e).__name__}: {e})", file=sys.stderr)
        return []


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        overrides = result_overrides(config.hydra.overrides.task)
        tracking = OmegaConf.to_container(config.tracking, resolve=True)
        tracker = backend(config.tracking)
        sweep_hash = _digest({"overrides": sorted(overrides), "experiment": tracking.get("experiment")})
        tracker.check()
        parent_id, reused = tracker.open_parent(
            name=f"sweep {' '.join(overrides)}"[:250], sweep_hash=sweep_hash,
            tags={"sweep_overrides": " ".join(overrides), "sweep_dir": str(sweep_dir)},
            reuse=not config.get("rerun", False))
        from runner.redact import redact, redact_folder

        (sweep_dir / SWEEP_FILE).write_text(redact(json.dumps(  # the jobs read the parent's id; the
            {"parent_run_id": parent_id, "tracking": tracking, "reused": reused,  # end, config.tracking
             "jobs": count_jobs(config.hydra.overrides.task)})))
        redact_folder(sweep_dir)  # Hydra's multirun.yaml
        CURRENT.update(tracking=tracking, parent_run_id=parent_id)
        if parent_id:
            print(f"runner: sweep parent run {parent_id}" + (" (resumed)" if reused else ""))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from runner.redact import redact_folder

        sweep_dir = Path(config.hydra.sweep.dir)
        redact_folder(sweep_dir)  # Hydra's multirun.yaml is written after on_multirun_start
        info = read_sweep(sweep_dir)
        if info is None:
            return
        statuses = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob(f"*/{STATUS_FILE}"))]
        counts = {s: sum(1 for x in statuses if x["status"] == s) for s in ("run", "skipped", "failed")}
        global FAILED_JOBS
        FAILED_JOBS = counts["failed"]
        CURRENT.clear()
        tracker = backend(config.tracking)  # the real URI: the sweep file's is masked
        try:
            summary = finish(tracker, info["parent_run_id"], sweep_dir, counts)
        except Exception as e:  # the parent must not stay RUNNING
            tracker.run_id = info["parent_run_id"]
            try:
                from runner.redact import redact

                tracker.end("FAILED", tags={"error": redact(f"{type(e).__name__}: {e}")[:500]})
            finally:
                FAILED_JOBS = max(FAILED_JOBS, 1)
                import sys

                from runner.redact import redact

                print(redact(f"runner: error: summarising the sweep failed ({type(e).__name__}: {e}); "
                             f"parent run {info['parent_run_id']} is FAILED"), file=sys.stderr)
            return
        under = f" under parent {info['parent_run_id']}" if info["parent_run_id"] else f" in {sweep_dir}"
        print(f"runner: sweep done: {len(statuses)} jobs, {counts['run']} run, "
              f"{counts['skipped']} skipped, {counts['failed']} failed; "
              f"{summary['children']} finished child runs{under}")


MlflowSweep = SweepCallback  # the callback's name in configs composed before backends
