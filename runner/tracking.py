"""results -> MLflow. The only module that imports mlflow.

The import and the store/experiment set-up (about 2-4 s cold) run in a background thread that
overlaps the JAX compile and fit; everything is then logged with a few `log_batch` calls.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100  # MLflow's per-request limits
MAX_PARAM_LEN = 6000


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
            for i in range(0, len(plist), MAX_PARAMS):
                client.log_batch(run_id, params=plist[i:i + MAX_PARAMS])
            for i in range(0, len(metrics), MAX_METRICS):
                client.log_batch(run_id, metrics=metrics[i:i + MAX_METRICS])
            for rel in artifacts:
                parent = str(Path(rel).parent)
                client.log_artifact(run_id, str(artifact_dir / rel), None if parent == "." else parent)
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id, "FINISHED")
        return run_id
