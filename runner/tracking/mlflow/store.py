"""The MLflow backend: the store, experiments, runs and their logging. The only module (with
pyfunc.py, the model it logs) that imports mlflow; it runs in the tracking worker process
(runner/tracking/worker.py), called by `runner.tracking.Tracker` in the command's process.
"""
from __future__ import annotations

import json
import re
import os
import time
from pathlib import Path

from runner.errors import TrackingError, describe
from runner.tracking.base import metric_safe

# MLflow 3 sends usage telemetry and waits for it at exit (about 1 s per process where the
# network is closed); off unless the user sets MLFLOW_DISABLE_TELEMETRY=false.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

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


def log_files(client, run_id: str, artifact_dir: Path, artifacts) -> None:
    """Each file (a path relative to artifact_dir) under the same relative folder of the run."""
    for rel in artifacts:
        parent = str(Path(rel).parent)
        client.log_artifact(run_id, str(artifact_dir / rel), None if parent == "." else parent)


def log_table(client, run_id: str, table: dict, artifact_file: str, folder: Path) -> None:
    """`MlflowClient.log_table` (the UI shows it as a table), replacing the file where the run
    has it already (log_table would append the rows a second time)."""
    have = {a.path for a in client.list_artifacts(run_id)}
    if artifact_file not in have:
        client.log_table(run_id, data=table, artifact_file=artifact_file)
        return
    import pandas as pd

    path = folder / artifact_file
    pd.DataFrame(table).to_json(path, orient="split", index=False)  # log_table's own format
    client.log_artifact(run_id, str(path))


def log_dataset(client, run_id: str, name: str, source: str, array) -> None:
    """mlflow.log_input for a client run: the UI's Dataset column (name, digest, source)."""
    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag

    import warnings

    with warnings.catch_warnings():  # a loader name as source: MLflow warns it could be several kinds
        warnings.simplefilter("ignore", UserWarning)
        ds = mlflow.data.from_numpy(array, source=source, name=name)
    client.log_inputs(run_id, datasets=[DatasetInput(ds._to_mlflow_entity(),
                                                     tags=[InputTag("mlflow.data.context", "training")])])


def strided_steps(n: int, max_points: int | None) -> list[int]:
    """Every step when n <= max_points (or no cap); otherwise an even stride plus the last step.
    The sqlite store takes about 0.2 ms per metric point, so 50000 steps x 3 curves would add
    about 30 s to a run; the full curves are always in the run's metrics.json artifact."""
    if not max_points or n <= max_points:
        return list(range(n))
    stride = -(-n // max_points)
    return sorted(set(range(0, n, stride)) | {n - 1})


curve_steps = strided_steps  # the name runner.tracking exports


def metric_name(name: str) -> str:
    """A name MLflow accepts (alphanumerics, _ - . space : /, at most 250 characters): numpyro's
    param names may hold others (a flow's `auto_arn__0$params`)."""
    return metric_safe(name)[:250]



OWNER_PID: int | None = None  # in the tracking worker: the pid of the command it works for


def process_tags() -> dict:
    import socket

    return {"runner.pid": str(OWNER_PID or os.getpid()), "runner.host": socket.gethostname()}


def preimport() -> None:
    """MLflow's modules, imported before the first request needs them (in the worker)."""
    try:
        import mlflow  # noqa: F401
        from mlflow.tracking import MlflowClient  # noqa: F401
    except BaseException:
        pass  # the request that needs them reports the error


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Store:
    """The MLflow side of a `Tracker`, in the tracking worker process."""

    def __init__(self, uri: str, experiment: str):
        self.uri, self.experiment = uri, experiment
        self._prepared = False
        self._error: BaseException | None = None
        self.experiment_id: str | None = None
        self.run_id: str | None = None
        self.reaped: list[str] = []

    def prepare(self, open_run: dict | None = None) -> None:
        """The store and experiment (created if new), stale runs reaped, and with `open_run`
        (tags) this command's run created. An error is raised by the next call (wait)."""
        self._prepared = True
        try:
            import logging

            # MLflow retries an unreachable server for minutes by default
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            import mlflow
            from mlflow.tracking import MlflowClient

            logging.getLogger("mlflow").setLevel(logging.WARNING)  # no schema-migration chatter
            # a database error is logged there with its traceback, then raised: runner says it in one line
            logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

            with store_lock(self.uri):  # creating the client may create (migrate) the store
                mlflow.set_tracking_uri(self.uri)
                client = MlflowClient(self.uri)
                exp = client.get_experiment_by_name(self.experiment)
                if exp is not None and exp.lifecycle_stage == "deleted":
                    raise TrackingError(f"experiment '{self.experiment}' is deleted in {self.uri}: restore it "
                                        "(mlflow experiments restore) or choose another tracking.experiment")
                # the UI opens an experiment of this kind on its runs table (MLflow 3 defaults to GenAI pages)
                self.experiment_id = exp.experiment_id if exp else client.create_experiment(
                    self.experiment, tags={"mlflow.experimentKind": "custom_model_development"})
            self.client = client
            self.reap_stale()
            if open_run is not None:
                self._create_run(open_run)
        except BaseException as e:  # raised by the next call, through wait()
            self._error = e

    def open(self, tags: dict) -> str:
        """Create this command's run now (RUNNING), for a tracker started without open_run."""
        self.wait()
        return self._create_run(tags)

    def run_dir_of(self, run_id: str) -> str | None:
        self.wait()
        try:
            return self.client.get_run(run_id).data.tags.get("run_dir")
        except Exception:
            return None

    def _create_run(self, tags: dict) -> str:
        """This command's run, RUNNING, tagged with the process that owns it (see reap_stale). With
        the tag runner.resumes (a run directory): that directory's interrupted run, reopened, so a
        resumed fit ends as one MLflow run."""
        tags = dict(tags)
        resumes = tags.pop("runner.resumes", None)
        if resumes:
            found = self.client.search_runs([self.experiment_id], filter_string=(
                f"tags.run_dir = '{resumes}' and attributes.status != 'FINISHED'"),
                order_by=["attributes.start_time DESC"], max_results=1)
            if found:
                run_id = found[0].info.run_id
                self.client.update_run(run_id, status="RUNNING")
                for k, v in {**tags, **process_tags(), "runner.resumed_from": resumes}.items():
                    self.client.set_tag(run_id, k, str(v))
                self.run_id = run_id
                return run_id
        run = self.client.create_run(self.experiment_id, tags={**{k: str(v) for k, v in tags.items()},
                                                               **process_tags()})
        self.run_id = run.info.run_id
        return self.run_id

    def adopt(self) -> str | None:
        """The run this command opened (RUNNING, tagged with its pid and host): a new worker that
        takes over from one that died goes on with it rather than opening a second run."""
        import socket

        self.wait()
        if self.run_id is None:
            runs = self.client.search_runs([self.experiment_id], filter_string=(
                f"attributes.status = 'RUNNING' and tags.`runner.pid` = '{OWNER_PID or os.getpid()}' and "
                f"tags.`runner.host` = '{socket.gethostname()}'"), order_by=["attributes.start_time DESC"],
                max_results=1)
            self.run_id = runs[0].info.run_id if runs else None
        return self.run_id

    def reap_stale(self) -> None:
        """Runs left RUNNING by a process of this host that is gone (SIGKILL, power loss) -> FAILED,
        in every experiment of the store (the next command on the store, whatever its experiment)."""
        import socket

        from mlflow.entities import ViewType

        host = socket.gethostname()
        experiments = [e.experiment_id for e in self.client.search_experiments(view_type=ViewType.ACTIVE_ONLY,
                                                                               max_results=50000)]
        runs = self.client.search_runs(experiments or [self.experiment_id], filter_string=(
            f"attributes.status = 'RUNNING' and tags.`runner.host` = '{host}'"), max_results=1000)
        for r in runs:
            pid = r.data.tags.get("runner.pid", "")
            if pid.isdigit() and not _alive(int(pid)):
                self.client.set_tag(r.info.run_id, "runner.stale",
                                    f"process {pid} on {host} was gone; marked FAILED by a later command")
                self.client.set_terminated(r.info.run_id, "FAILED")
                self.reaped.append(r.info.run_id)

    def end(self, status: str, params: dict | None = None, tags: dict | None = None,
            artifact_dir: Path | None = None, artifacts=(), children: bool = False) -> str | None:
        """End the opened run with `status` (KILLED, FAILED), logging what is there. `children`:
        its child runs that were running (an interrupted sweep's jobs in launcher processes, which
        the launcher has killed: the reaper has just marked them FAILED) end with `status` too."""
        from mlflow.entities import Param

        self.wait()
        if self.run_id is None:
            return None
        client = self.client
        if children:
            running = client.search_runs([self.experiment_id], filter_string=(
                f"tags.`mlflow.parentRunId` = '{self.run_id}' and attributes.status = 'RUNNING'"), max_results=1000)
            reaped = [client.get_run(r) for r in self.reaped]
            for child in [*running, *(r for r in reaped if r.data.tags.get("mlflow.parentRunId") == self.run_id)]:
                if child.data.tags.get("runner.stale"):
                    client.delete_tag(child.info.run_id, "runner.stale")
                    self.reaped.remove(child.info.run_id)
                client.set_tag(child.info.run_id, "runner.interrupted", f"the sweep was interrupted ({status})")
                client.set_terminated(child.info.run_id, status)
        for k, v in (tags or {}).items():
            client.set_tag(self.run_id, k, str(v))
        if params:
            log_batches(client, self.run_id, params=[Param(k, str(v)[:MAX_PARAM_LEN]) for k, v in params.items()])
        if artifact_dir is not None:
            log_files(client, self.run_id, artifact_dir, [rel for rel in artifacts if (artifact_dir / rel).is_file()])
        client.set_terminated(self.run_id, status)
        return self.run_id

    def wait(self) -> None:
        if not self._prepared:
            self.prepare()
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
        with store_lock(self.uri):  # the same sweep started twice at once: one parent, shared
            if reuse:
                runs = self.client.search_runs(
                    [self.experiment_id], filter_string=f"tags.sweep_hash = '{sweep_hash}'",
                    order_by=["attributes.start_time DESC"], max_results=1)
                if runs:
                    self.client.update_run(runs[0].info.run_id, status="RUNNING")
                    for k, v in process_tags().items():
                        self.client.set_tag(runs[0].info.run_id, k, v)
                    return runs[0].info.run_id, True
            run = self.client.create_run(self.experiment_id, run_name=name,
                                         tags={**tags, "sweep_hash": sweep_hash, "runner.role": "sweep",
                                               **process_tags()})
            return run.info.run_id, False

    def children(self, parent_id: str, curves: int = 50) -> list[dict]:
        """A sweep's child runs as plain dicts (runner.sweep aggregates them): run_id, status,
        config_group, config_hash, seed, start_time, final_loss; `loss` (the curve) for the first
        `curves` finished ones (one per config hash)."""
        self.wait()
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'",
            order_by=["attributes.start_time ASC"], max_results=10000)
        out, drawn = [], set()
        for r in runs:
            tags = r.data.tags
            row = {"run_id": r.info.run_id, "status": r.info.status, "start_time": r.info.start_time,
                   "config_group": tags.get("config_group", "(defaults)"), "config_hash": tags.get("config_hash"),
                   "seed": tags.get("seed"), "final_loss": r.data.metrics.get("final_loss")}
            if (r.info.status == "FINISHED" and row["final_loss"] is not None and len(drawn) < curves
                    and row["config_hash"] not in drawn):
                drawn.add(row["config_hash"])
                history = self.client.get_metric_history(r.info.run_id, "loss")
                row["loss"] = [m.value for m in sorted(history, key=lambda m: m.step)]
            out.append(row)
        return out

    def finish_parent(self, parent_id: str, *, scalars: dict, artifact_dir: Path, artifacts: list,
                      tags: dict | None = None, table: dict | None = None, table_file: str | None = None,
                      status: str = "FINISHED") -> None:
        """The sweep's aggregate onto its parent run (metrics, tags, the table as MLflow's table
        artifact, files), then `status`. A resumed parent's table is replaced, not appended to
        (MLflow's log_table appends to an existing file). A parent that a live command of the same
        sweep opened after this one stays RUNNING: that command ends it, with every job counted."""
        from mlflow.entities import Metric, RunTag

        self.wait()
        now = int(time.time() * 1000)
        log_batches(self.client, parent_id, metrics=[Metric(metric_name(k), float(v), now, 0)
                                                     for k, v in scalars.items()])
        if tags:
            self.client.log_batch(parent_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        if table is not None and table_file:
            log_table(self.client, parent_id, table, table_file, Path(artifact_dir))
        log_files(self.client, parent_id, Path(artifact_dir), artifacts)
        if status == "FINISHED" and self._shared_with_live(parent_id):
            return  # the same sweep, started again while this one ran, ends the parent when it ends
        self.client.set_terminated(parent_id, status)

    def _shared_with_live(self, parent_id: str) -> bool:
        """Whether another live process of this host took the parent over (open_parent tags it
        with the pid of the last command that opened it: the same sweep started again)."""
        import socket

        tags = self.client.get_run(parent_id).data.tags
        pid = tags.get("runner.pid", "")
        return (tags.get("runner.host") == socket.gethostname() and pid.isdigit()
                and int(pid) != (OWNER_PID or os.getpid()) and _alive(int(pid)))

    def open_job(self, tags: dict, config_hash: str, finished: bool = True) -> str | None:
        """Open a sweep job's run unless another run of the same config makes it redundant: a
        FINISHED one (`finished`; rerun=true passes False) or a RUNNING one of a live process (the
        same sweep started twice at once). Returns that twin's id (nothing opened), or None (this
        run is open). A sqlite store is looked at and the run created under its file lock, so of
        two racing commands exactly one runs the job; on a server each command looks again
        after creating its run and the later of two twins deletes its own."""
        self.wait()
        with store_lock(self.uri):
            twin = self._twin(config_hash, finished)
            if twin:
                return twin
            self._create_run(tags)
        twin = self._twin(config_hash, finished, mine=self.run_id)
        if twin:
            self.client.delete_run(self.run_id)
            self.run_id = None
        return twin

    def _twin(self, config_hash: str, finished: bool, mine: str | None = None) -> str | None:
        """Another run of this config that a job yields to; with `mine` (this job's open run),
        a RUNNING one only if it started before it."""
        import socket

        host = socket.gethostname()
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.config_hash = '{config_hash}' and "
            "attributes.status != 'FAILED' and attributes.status != 'KILLED'",
            order_by=["attributes.start_time ASC"], max_results=1000)
        me = next((r for r in runs if r.info.run_id == mine), None)
        for r in runs:
            if r.info.run_id == mine or (mine and r.data.tags.get("mlflow.parentRunId") == mine):
                continue  # this run, or its own replicates
            if r.info.status == "FINISHED":
                if finished:
                    return r.info.run_id
                continue
            if r.info.status != "RUNNING":
                continue
            pid = r.data.tags.get("runner.pid", "")
            if r.data.tags.get("runner.host") == host and pid.isdigit() and not _alive(int(pid)):
                continue  # left by a process that is gone (reaped later), not a twin
            if me is None or (r.info.start_time, r.info.run_id) < (me.info.start_time, me.info.run_id):
                return r.info.run_id
        return None

    def log_run(self, *, tags: dict, params: dict, scalars: dict, curves: dict, artifact_dir: Path,
                artifacts: list[str], max_points: int | None = None, status: str = "FINISHED",
                into_open_run: bool = False, dataset: dict | None = None, model: dict | None = None,
                curve_steps: list | None = None) -> str:
        """One run: tags, params, scalar metrics, per-step curves, artifacts; then `status`
        (FAILED if logging itself fails). `into_open_run`: the run made by start(open_run=...).
        `model`: {files, method, data} for the pyfunc model (runner/tracking/mlflow/pyfunc.py)."""
        from mlflow.entities import Metric, Param, RunTag

        steps_of = curve_steps  # the step of each curve point (None: point i is step i)
        self.wait()
        client = self.client
        if into_open_run and self.run_id:
            run_id = self.run_id
            client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()][:MAX_TAGS])
        else:
            run = client.create_run(self.experiment_id, tags={k: str(v) for k, v in tags.items()})
            run_id = run.info.run_id
        try:
            now = int(time.time() * 1000)
            metrics = [Metric(metric_name(k), float(v), now, 0) for k, v in scalars.items()]
            for key, values in curves.items():
                metrics += [Metric(metric_name(key), float(values[i]), now,
                                   i if steps_of is None else int(steps_of[i]))
                            for i in strided_steps(len(values), max_points)]
            plist = [Param(k, str(v)[:MAX_PARAM_LEN]) for k, v in params.items()]
            log_batches(client, run_id, params=plist, metrics=metrics)
            if dataset is not None:
                log_dataset(client, run_id, **dataset)
            log_files(client, run_id, artifact_dir, artifacts)
            if model is not None:
                from runner.tracking.mlflow.pyfunc import log_model

                log_model(run_id, **model)
        except BaseException as e:
            interrupted = isinstance(e, KeyboardInterrupt) or (isinstance(e, SystemExit) and e.code == 143)
            client.set_terminated(run_id, "KILLED" if interrupted else "FAILED")
            raise
        client.set_terminated(run_id, status)
        if into_open_run:
            self.run_id = None  # ended: an interruption from here on has nothing left to mark
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
             "tags": dict(r.data.tags), "params": dict(r.data.params), "metrics": dict(r.data.metrics),
             "final_loss": r.data.metrics.get("final_loss")} for r in runs]


def fetch_run(uri: str, run_id: str, dst: Path, names: tuple[str, ...]) -> dict:
    """Download the named artifacts of a run (those it has) into dst; return its tags.
    LookupError if the run does not exist."""
    import logging

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    client = MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as e:
        raise LookupError(f"no run {run_id} in {uri} ({describe(e)})") from None
    have = {a.path for a in client.list_artifacts(run_id)}
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name in have:
            client.download_artifacts(run_id, name, str(dst))
    return dict(run.data.tags)
