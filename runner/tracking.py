"""results -> MLflow. The only module that imports mlflow.

The import and the store/experiment set-up (about 2-4 s cold) run in a background thread that
overlaps the JAX compile and fit; everything is then logged with a few `log_batch` calls.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100  # MLflow's per-request limits
MAX_PARAM_LEN = 6000


def store_lock(uri: str):
    """A file lock beside a sqlite store: creating a fresh store (schema migration) or the same
    experiment from several processes at once fails; one at a time, each finds what the first made."""
    import contextlib

    from filelock import FileLock

    if not uri.startswith("sqlite:///"):
        return contextlib.nullcontext()
    path = Path(uri[len("sqlite:///"):]).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock", timeout=300)


def log_batches(client, run_id: str, params=(), metrics=()) -> None:
    """`log_batch` in chunks within MLflow's per-request limits."""
    for i in range(0, len(params), MAX_PARAMS):
        client.log_batch(run_id, params=params[i:i + MAX_PARAMS])
    for i in range(0, len(metrics), MAX_METRICS):
        client.log_batch(run_id, metrics=metrics[i:i + MAX_METRICS])


def curve_steps(n: int, max_points: int | None) -> list[int]:
    """Every step when n <= max_points (or no cap); otherwise an even stride plus the last step.
    The sqlite store takes about 0.2 ms per metric point, so 50000 steps x 3 curves would add
    about 30 s to a run; the full curves are always in the run's metrics.json artifact."""
    if not max_points or n <= max_points:
        return list(range(n))
    stride = -(-n // max_points)
    return sorted(set(range(0, n, stride)) | {n - 1})


class Tracker:
    def __init__(self, uri: str, experiment: str):
        self.uri, self.experiment = uri, experiment
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.experiment_id: str | None = None

    def start(self) -> "Tracker":
        self._thread = threading.Thread(target=self._prepare, name="mlflow-setup", daemon=True)
        self._thread.start()
        return self

    def _prepare(self) -> None:
        try:
            import logging

            import mlflow
            from mlflow.tracking import MlflowClient

            logging.getLogger("mlflow").setLevel(logging.WARNING)  # no schema-migration chatter

            mlflow.set_tracking_uri(self.uri)
            client = MlflowClient(self.uri)
            with store_lock(self.uri):
                exp = client.get_experiment_by_name(self.experiment)
                self.experiment_id = exp.experiment_id if exp else client.create_experiment(self.experiment)
            self.client = client
        except BaseException as e:  # re-raised in the main thread by wait()
            self._error = e

    def wait(self) -> None:
        if self._thread is None:
            self.start()
        self._thread.join()
        if self._error is not None:
            raise self._error

    def find_finished(self, config_hash: str) -> str | None:
        """The id of a FINISHED run of this experiment with this config hash, if any."""
        self.wait()
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.config_hash = '{config_hash}' and "
            "attributes.status = 'FINISHED'", max_results=1)
        return runs[0].info.run_id if runs else None

    def open_parent(self, *, name: str, sweep_hash: str, tags: dict, reuse: bool) -> tuple[str, bool]:
        """The sweep's parent run: the one from an earlier run of the same sweep when `reuse`."""
        self.wait()
        if reuse:
            runs = self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.sweep_hash = '{sweep_hash}'",
                order_by=["attributes.start_time DESC"], max_results=1)
            if runs:
                self.client.update_run(runs[0].info.run_id, status="RUNNING")
                return runs[0].info.run_id, True
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={**tags, "sweep_hash": sweep_hash, "runner.role": "sweep"})
        return run.info.run_id, False

    def finish_sweep(self, parent_id: str, sweep_dir: Path, counts: dict) -> dict:
        """Per configuration (children grouped across seeds): mean/std/min of final_loss on the
        parent, a table and a comparison plot; then the parent is FINISHED."""
        import numpy as np

        from mlflow.entities import Metric

        from runner import plots
        from runner.sweep import metric_safe

        self.wait()
        client = self.client
        children = client.search_runs(
            [self.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'",
            max_results=10000)
        finished = [r for r in children if r.info.status == "FINISHED" and "final_loss" in r.data.metrics]
        groups: dict[str, list] = {}
        for r in finished:
            groups.setdefault(r.data.tags.get("config_group", "(defaults)"), []).append(r)
        now = int(time.time() * 1000)
        metrics, table = [], []
        for label, runs in sorted(groups.items()):
            losses = np.array([r.data.metrics["final_loss"] for r in runs])
            stats = {"mean": float(losses.mean()), "std": float(losses.std()),
                     "min": float(losses.min()), "n": len(losses)}
            table.append({"config": label, **stats, "run_ids": [r.info.run_id for r in runs]})
            key = metric_safe(label)
            metrics += [Metric(f"final_loss_{s}/{key}", v, now, 0) for s, v in stats.items()]
        metrics += [Metric(f"jobs_{k}", float(v), now, 0) for k, v in counts.items()]
        metrics.append(Metric("children_finished", float(len(finished)), now, 0))
        log_batches(client, parent_id, metrics=metrics)
        out = Path(sweep_dir) / "sweep"
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(table, indent=1))
        curves = {r.info.run_id: [m.value for m in sorted(client.get_metric_history(r.info.run_id, "loss"),
                                                          key=lambda m: m.step)]
                  for r in finished[:50]}
        plots.sweep_plot(table, curves, out / "final_losses.png")
        client.log_artifact(parent_id, str(out / "summary.json"))
        client.log_artifact(parent_id, str(out / "final_losses.png"), "plots")
        client.set_terminated(parent_id, "FINISHED")
        return {"children": len(finished), "groups": table}

    def log_run(self, *, tags: dict, params: dict, scalars: dict, curves: dict, artifact_dir: Path,
                artifacts: list[str], max_points: int | None = None) -> str:
        """One run: tags, params, scalar metrics, per-step curves, artifacts; FINISHED or FAILED."""
        from mlflow.entities import Metric, Param, RunTag

        self.wait()
        client = self.client
        run = client.create_run(self.experiment_id, tags={k: str(v) for k, v in tags.items()})
        run_id = run.info.run_id
        try:
            now = int(time.time() * 1000)
            metrics = [Metric(k, float(v), now, 0) for k, v in scalars.items()]
            for key, values in curves.items():
                metrics += [Metric(key, float(values[step]), now, step)
                            for step in curve_steps(len(values), max_points)]
            plist = [Param(k, str(v)[:MAX_PARAM_LEN]) for k, v in params.items()]
            log_batches(client, run_id, params=plist, metrics=metrics)
            for rel in artifacts:
                parent = str(Path(rel).parent)
                client.log_artifact(run_id, str(artifact_dir / rel), None if parent == "." else parent)
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id, "FINISHED")
        return run_id


def list_runs(uri: str, experiment: str, parent: str | None = None) -> list[dict]:
    """Runs of an experiment (or the children of one sweep) as plain dicts, for runner.compare."""
    import logging

    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise LookupError(f"no experiment '{experiment}' in {uri}")
    query = f"tags.`mlflow.parentRunId` = '{parent}'" if parent else ""
    runs = client.search_runs([exp.experiment_id], filter_string=query, max_results=50000)
    return [{"run_id": r.info.run_id, "status": r.info.status, "name": r.info.run_name,
             "tags": dict(r.data.tags), "params": dict(r.data.params),
             "final_loss": r.data.metrics.get("final_loss")} for r in runs]


def fetch_run(uri: str, run_id: str, dst: Path, names: tuple[str, ...]) -> dict:
    """Download the named artifacts of a run (those it has) into dst; return its tags.
    LookupError if the run does not exist."""
    import logging
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    client = MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as e:
        raise LookupError(f"no run {run_id} in {uri} ({str(e).splitlines()[0]})") from None
    have = {a.path for a in client.list_artifacts(run_id)}
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name in have:
            client.download_artifacts(run_id, name, str(dst))
    return dict(run.data.tags)
