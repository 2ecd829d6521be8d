"""tracking=mlflow: runner's events recorded in an MLflow store (any MLflow URI: sqlite:///path.db,
http://host:port, a database).

`check`, `check_params` and `look` run in the command's process and import no mlflow; the
events run in the tracking worker process (`background = True`: runner/tracking/worker.py), where
the first call sets up the store and experiment (created if new) and reaps stale runs, while the
command's process traces and compiles the fit. runner's words become MLflow's here only: a run's
name is `mlflow.runName`, its parent `mlflow.parentRunId`, a sweep's description its note.
"""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from runner.errors import TrackingError
from runner.tracking.base import RunEnd, RunRecord, RunStart, SweepResult, SweepStart, Tracking
from runner.tracking.worker import alive, host
from runner.tracking.mlflow.reach import MLFLOW_NAMED_URIS, REACH_TIMEOUT_S, check_reachable, check_timeout

# MLflow 3 sends usage telemetry and waits for it at exit (about 1 s per process where the
# network is closed); off unless the user sets MLFLOW_DISABLE_TELEMETRY=false. Set here, in the
# command's process: the worker inherits its environment.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

#: runner's tags that MLflow shows in its own places
SYSTEM_TAGS = {"source.git_commit": "mlflow.source.git.commit"}
RUN_NAME, PARENT, NOTE = "mlflow.runName", "mlflow.parentRunId", "mlflow.note.content"
#: what an interrupted run's end said (its error, the sweep's interruption, the reaper's note): cleared when it is resumed
STALE_TAGS = {"error", "runner.interrupted", "runner.stale"}


def mlflow_tags(tags: dict, name: str | None = None, parent_id: str | None = None) -> dict:
    """runner's tags in MLflow's words (values as strings)."""
    out = {SYSTEM_TAGS.get(k, k): str(v) for k, v in tags.items()}
    if name is not None:
        out[RUN_NAME] = name
    if parent_id:
        out[PARENT] = parent_id
    return out




def mlflow_command() -> str:
    """How to start this environment's `mlflow` as a hint to type: `mlflow` when the shell finds it
    (the environment is activated), else its path (`.venv/bin/mlflow`, as `make run` leaves it),
    so the hint works as printed."""
    import shutil
    import sys

    mine, found = Path(sys.executable).parent / "mlflow", shutil.which("mlflow")
    if not mine.exists():
        return "mlflow" if found else f"{sys.executable} -m mlflow"
    if found and Path(found).resolve() == mine.resolve():
        return "mlflow"
    try:
        near = os.path.relpath(mine)  # .venv/bin/mlflow from the project folder
    except ValueError:  # another drive
        return str(mine)
    return str(mine) if near.startswith("..") else near


#: MlflowTracking._key() -> (client, experiment id) of the stores this process opened and reaped
_OPENED: dict = {}


class MlflowTracking(Tracking):
    background = True

    def __init__(self, uri: str, experiment: str, max_points_per_curve: int | None = 2000,
                 log_model: bool = True, timeout: float = REACH_TIMEOUT_S):
        self.uri, self.experiment, self.timeout = uri, experiment, timeout
        self.max_points, self.log_model = max_points_per_curve, log_model
        self.experiment_id: str | None = None
        self.run_id: str | None = None
        self.reaped: list[str] = []
        self._client = None
        self._error: BaseException | None = None

    # --- the command's side: no mlflow import ---------------------------------------------------
    def check(self, create: bool = True) -> None:
        """Everything the store will refuse, before any fit: an empty or file-store URI, an empty
        experiment name, an unreachable server, an unwritable sqlite file; `create=False` (the
        side commands): a sqlite file that is missing or is not an MLflow store."""
        uri, experiment = self.uri, self.experiment
        if not isinstance(uri, str) or not uri.strip():
            raise TrackingError("tracking.uri is empty: set it to a store, e.g. sqlite:///mlflow.db "
                                "(or tracking=none for no store)")
        if uri.startswith("file:") or (":" not in uri and uri not in MLFLOW_NAMED_URIS):  # a path
            if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() != "true":
                raise TrackingError(f"tracking.uri={uri} is a file store, which MLflow 3 refuses: use "
                                    "sqlite:///mlflow.db (or set MLFLOW_ALLOW_FILE_STORE=true)")
        if not isinstance(experiment, str) or not experiment.strip():
            raise TrackingError("tracking.experiment is empty: name the MLflow experiment, e.g. tracking.experiment=runner")
        if not create:
            self._check_readable()
        else:  # the range of the one setting a run uses beyond the store's (runner.schema's)
            from runner import schema

            schema.TRACKING["tracking.max_points_per_curve"]("tracking.max_points_per_curve", self.max_points)
        check_reachable(uri, check_timeout(self.timeout), create=create)

    def _check_readable(self) -> None:
        """Read-only: a sqlite file that is missing or is not MLflow's is refused (MLflow's client
        would create and migrate it)."""
        if not self.uri.startswith("sqlite:///"):
            return
        import sqlite3

        path = Path(self.uri[len("sqlite:///"):]).expanduser()
        if not path.is_file():
            raise TrackingError(f"no MLflow store at {path} (no such file): check --uri / tracking.uri= "
                                "(default sqlite:///mlflow.db, in this folder)")
        try:
            with sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True) as db:
                found = db.execute("select name from sqlite_master where type='table' and name='experiments'").fetchone()
        except sqlite3.DatabaseError as e:
            raise TrackingError(f"{path} is not an MLflow store ({e})") from None
        if not found:
            raise TrackingError(f"{path} is not an MLflow store (it has no experiments table)")

    def check_params(self, params: dict) -> None:
        """Param names MLflow stores: alphanumerics, _ - . space : / (a `+a$b=1` override is not one)."""
        bad = sorted(k for k in params if not re.fullmatch(r"[\w\-. :/]{1,250}", k))
        if bad:
            raise TrackingError(f"config key {bad[0]!r} cannot be an MLflow param name (letters, digits, "
                                "_ - . space : / only, at most 250): rename or drop that override")

    def look(self) -> str:
        from runner.redact import redact

        return f"{mlflow_command()} ui --backend-store-uri {redact(self.uri)}"

    def where(self) -> str:
        return self.uri

    # --- in the worker ------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"run_id": self.run_id, "reaped": list(self.reaped), "experiment_id": self.experiment_id}

    def connect(self) -> None:
        """The store and experiment (created if new), stale runs reaped, once per worker (a sweep's
        jobs share them: opening and reaping cost ~0.05 s a job). An error is raised by the next
        event (`client`)."""
        if self._client is not None or self._error is not None:
            return
        opened = _OPENED.get(self._key())
        if opened is not None:
            import mlflow

            mlflow.set_tracking_uri(self.uri)  # the pyfunc model is logged through MLflow's current store
            self._client, self.experiment_id = opened
            return
        try:
            self._client = self._open_store()
            self.reap_stale()
            _OPENED[self._key()] = (self._client, self.experiment_id)
        except BaseException as e:
            self._error = e

    def _key(self) -> tuple:
        """The store (a relative sqlite path is the folder's the command runs in; the file itself,
        so that a store deleted and made again is opened again) and experiment."""
        uri, file = self.uri, None
        if uri.startswith("sqlite:///"):
            path = Path(uri[len("sqlite:///"):]).expanduser().resolve()
            uri = f"sqlite:///{path}"
            try:
                stat = path.stat()
                file = (stat.st_dev, stat.st_ino)
            except OSError:
                file = "missing"
        return uri, file, self.experiment

    def _open_store(self):
        import logging

        # MLflow retries an unreachable server for minutes by default
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        import mlflow
        from mlflow.tracking import MlflowClient

        from runner.tracking.mlflow.store import store_lock

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
        return client

    @property
    def client(self):
        if self._client is None and self._error is None:
            self.connect()
        if self._error is not None:
            raise self._error
        return self._client

    def reap_stale(self) -> None:
        """Runs left RUNNING by a process of this host that is gone (SIGKILL, power loss) -> FAILED,
        in every experiment of the store (the next command on the store, whatever its experiment)."""
        from mlflow.entities import ViewType

        client, here = self._client, host()
        experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY,
                                                                          max_results=50000)]
        runs = client.search_runs(experiments or [self.experiment_id], filter_string=(
            f"attributes.status = 'RUNNING' and tags.`runner.host` = '{here}'"), max_results=1000)
        for r in runs:
            pid = r.data.tags.get("runner.pid", "")
            if pid.isdigit() and not alive(int(pid)):
                client.set_tag(r.info.run_id, "runner.stale", f"process {pid} on {here} was gone; marked FAILED by a later command")
                client.set_terminated(r.info.run_id, "FAILED")
                self.reaped.append(r.info.run_id)

    def _search(self, query: str, order: str | None = None, limit: int = 1000) -> list:
        return self.client.search_runs([self.experiment_id], filter_string=query, max_results=limit,
                                       order_by=[order] if order else None)

    # --- a run ---------------------------------------------------------------------------------------
    def run_started(self, start: RunStart) -> str | None:
        """Open this command's run (RUNNING, tagged with its process). A sweep's job
        (start.yield_to_finished is not None) yields to a twin instead, see `_open_job`."""
        tags = mlflow_tags(start.tags, start.name, start.parent_id)
        if start.yield_to_finished is None or start.resumes:  # a sweep's job requeued (SLURM): its own run
            self._create_run(tags, start.resumes)
            return None
        return self._open_job(tags, start.config_hash, start.yield_to_finished, start.parent_id)

    def _create_run(self, tags: dict, resumes: str | None = None) -> str:
        """This command's run, RUNNING, tagged with the process that owns it (see reap_stale). With
        `resumes` (a run directory): that directory's interrupted run, reopened, so a resumed fit
        ends as one MLflow run."""
        from runner.tracking.mlflow.store import process_tags

        client = self.client
        if resumes:
            found = self._search(f"tags.run_dir = '{resumes}' and attributes.status != 'FINISHED'",
                                 "attributes.start_time DESC", 1)
            if found:
                self.run_id = found[0].info.run_id
                client.update_run(self.run_id, status="RUNNING")
                for k, v in {**tags, **process_tags(), "runner.resumed_from": resumes}.items():
                    client.set_tag(self.run_id, k, str(v))
                for stale in STALE_TAGS.intersection(found[0].data.tags):  # how it ended before: no longer true
                    client.delete_tag(self.run_id, stale)
                return self.run_id
        self.run_id = client.create_run(self.experiment_id, tags={**tags, **process_tags()}).info.run_id
        return self.run_id

    def _open_job(self, tags: dict, config_hash: str, finished: bool, parent: str | None) -> str | None:
        """Open a sweep job's run unless another run of the same config makes it redundant: a
        FINISHED one (`finished`; rerun=true passes False) or a RUNNING one of a live process (the
        same sweep started twice at once). Returns that twin's id (nothing opened), or None. A
        sqlite store is looked at and the run created under its file lock, so of two racing
        commands exactly one runs the job; on a server each command looks again after creating
        its run and the later of two twins deletes its own."""
        from runner.tracking.mlflow.store import store_lock

        self.client
        with store_lock(self.uri):
            twin = self._twin(config_hash, finished, parent=parent)
            if twin:
                return twin
            self._create_run(tags)
        twin = self._twin(config_hash, finished, mine=self.run_id, parent=parent)
        if twin:
            self.client.delete_run(self.run_id)
            self.run_id = None
        return twin

    def _twin(self, config_hash: str, finished: bool, mine: str | None = None, parent: str | None = None) -> str | None:
        """Another run of this config that a job yields to, a child of the same sweep's parent (the
        same sweep run again, or started twice at once: never a plain run of an hour ago); with
        `mine` (this job's open run), a RUNNING one only if it started before it."""
        runs = self._search(f"tags.config_hash = '{config_hash}' and attributes.status != 'FAILED' and "
                            "attributes.status != 'KILLED'" + self._child_of(parent), "attributes.start_time ASC")
        me = next((r for r in runs if r.info.run_id == mine), None)
        for r in runs:
            if r.info.run_id == mine or (mine and r.data.tags.get(PARENT) == mine):
                continue  # this run, or its own replicates
            if r.info.status == "FINISHED":
                if finished:
                    return r.info.run_id
                continue
            if r.info.status != "RUNNING" or self._left_by_the_dead(r):
                continue  # a run left by a process that is gone (reaped later) is not a twin
            if me is None or (r.info.start_time, r.info.run_id) < (me.info.start_time, me.info.run_id):
                return r.info.run_id
        return None

    @staticmethod
    def _left_by_the_dead(run) -> bool:
        pid = run.data.tags.get("runner.pid", "")
        return run.data.tags.get("runner.host") == host() and pid.isdigit() and not alive(int(pid))

    def adopt(self) -> str | None:
        """The run this command opened (RUNNING, tagged with its pid and host): a new worker that
        takes over from one that died goes on with it rather than opening a second run."""
        from runner.tracking.worker import owner_pid

        self.client
        if self.run_id is None:
            runs = self._search(f"attributes.status = 'RUNNING' and tags.`runner.pid` = '{owner_pid()}' and "
                                f"tags.`runner.host` = '{host()}'", "attributes.start_time DESC", 10)
            runs = [r for r in runs if r.data.tags.get("runner.role") != "sweep"]  # a job's, not its sweep's parent
            self.run_id = runs[0].info.run_id if runs else None
        return self.run_id

    def run_completed(self, record: RunRecord) -> str:
        """Into the opened run (or a new one): tags, params, metrics, curves, dataset, files, the
        model; then record.status (KILLED or FAILED if logging itself is interrupted or fails)."""
        from mlflow.entities import RunTag

        tags = mlflow_tags(record.tags, record.name, record.parent_id)
        if self.run_id:
            run_id = self.run_id
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()][:100])
        else:
            run_id = self.client.create_run(self.experiment_id, tags=tags).info.run_id
        self._log(run_id, record)
        self.run_id = None  # ended: an interruption from here on has nothing left to mark
        return run_id

    def child_logged(self, record: RunRecord) -> None:
        tags = mlflow_tags(record.tags, record.name, record.parent_id)
        self._log(self.client.create_run(self.experiment_id, tags=tags).info.run_id, record)

    def _log(self, run_id: str, record: RunRecord) -> None:
        """Params, metrics and curves, dataset, files and the pyfunc model into run `run_id`, then
        its status. The model is logged right after the params, before any metric: MLflow links a
        logged model to the run's params and to its metrics at the model's step (0) by reading
        every metric's whole history back (~75 ms for a GMM run's 26 curves and scalars, and a
        rejected duplicate insert); here the same step-0 metrics carry the model's id as they are
        logged, so the store holds the same rows. A model that cannot be logged leaves the rest logged
        (and the run FAILED with its error), as when it was logged last."""
        from runner.tracking.mlflow import store

        try:  # (this process ignores Ctrl-C and SIGTERM: the command ends its runs)
            metrics = store.metrics_of(record.scalars, record.curves, record.curve_steps, self.max_points)
            store.log_batches(self.client, run_id, params=store.params_of(record.params))  # a model takes them
            if record.model is not None and self.log_model:
                from runner.tracking.mlflow.pyfunc import log_model, model_run

                with model_run(run_id):  # leaving it ends the run (FINISHED); its status is set below
                    try:
                        model_id = log_model(run_id, **record.model)
                    except BaseException:  # the run keeps its metrics and files (it ends FAILED)
                        with contextlib.suppress(Exception):  # the model's error is the one said
                            self._log_rest(run_id, record, metrics)
                        raise
                    self._log_rest(run_id, record, store.linked(metrics, model_id, step=0))
            else:
                self._log_rest(run_id, record, metrics)
        except BaseException:
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, record.status)

    def _log_rest(self, run_id: str, record: RunRecord, metrics: list) -> None:
        from runner.tracking.mlflow import store

        store.log_batches(self.client, run_id, metrics=metrics)
        if record.dataset is not None:
            store.log_dataset(self.client, run_id, **record.dataset)
        store.log_files(self.client, run_id, record.artifact_dir, record.artifacts)

    def run_failed(self, end: RunEnd) -> str | None:
        return self._end("FAILED", end)

    def run_killed(self, end: RunEnd) -> str | None:
        return self._end("KILLED", end)

    def _end(self, status: str, end: RunEnd) -> str | None:
        """End the opened run with `status`, logging what there is."""
        from runner.tracking.mlflow import store

        if self.run_id is None:
            return None
        if end.error:
            self.client.set_tag(self.run_id, "error", end.error)
        for k, v in end.tags.items():
            self.client.set_tag(self.run_id, k, str(v))
        if end.params:
            store.log_batches(self.client, self.run_id, params=store.params_of(end.params))
        if end.artifact_dir is not None:
            folder = Path(end.artifact_dir)
            store.log_files(self.client, self.run_id, folder, [a for a in end.artifacts if (folder / a).is_file()])
        self.client.set_terminated(self.run_id, status)
        run_id, self.run_id = self.run_id, None
        return run_id

    # --- a sweep ---------------------------------------------------------------------------------------
    def sweep_started(self, start: SweepStart) -> tuple[str, bool]:
        """The sweep's parent run: the one from an earlier run of the same sweep when start.reuse."""
        from runner.tracking.mlflow.store import process_tags, store_lock

        client = self.client
        with store_lock(self.uri):  # the same sweep started twice at once: one parent, shared
            if start.reuse:
                runs = self._search(f"tags.sweep_hash = '{start.sweep_hash}'", "attributes.start_time DESC", 1)
                if runs:
                    client.update_run(runs[0].info.run_id, status="RUNNING")
                    for k, v in process_tags().items():
                        client.set_tag(runs[0].info.run_id, k, v)
                    return runs[0].info.run_id, True
            tags = {**mlflow_tags(start.tags), NOTE: start.description, "sweep_hash": start.sweep_hash,
                    "runner.role": "sweep", **process_tags()}
            return client.create_run(self.experiment_id, run_name=start.name, tags=tags).info.run_id, False

    def sweep_completed(self, parent_id: str | None, result: SweepResult) -> None:
        """The aggregate onto the parent (metrics, tags, the table as MLflow's table artifact,
        files), then FINISHED. A parent that a live command of the same sweep opened after this one
        stays RUNNING: that command ends it, with every job counted."""
        from mlflow.entities import RunTag

        from runner.tracking.mlflow import store

        folder = Path(result.artifact_dir)
        store.log_batches(self.client, parent_id, metrics=store.metrics_of(result.scalars, {}, None, None))
        tags = {**mlflow_tags(result.tags), NOTE: result.description}
        self.client.log_batch(parent_id, tags=[RunTag(k, v) for k, v in tags.items()])
        store.log_table(self.client, parent_id, result.table, result.table_file, folder)
        store.log_files(self.client, parent_id, folder, result.artifacts)
        if not self._shared_with_live(parent_id):
            self.client.set_terminated(parent_id, "FINISHED")
        try:  # a courtesy: a store that refuses the tag leaves the sweep as it is
            return self._sweep_view(parent_id)
        except Exception:
            return None

    def _sweep_view(self, parent_id: str) -> str:
        """The sweep in MLflow's chart view as a person wants it first: its children only, grouped
        by config_group (one curve per configuration, the mean over seeds), the loss curves and the
        final losses, best first. Saved as one of MLflow's shared views (an experiment tag
        mlflow.sharedViewState.<key>, what the UI's Share button writes); returns the page's address:
        the server's, or where `mlflow ui` serves a local store, and the command that serves it."""
        import json

        key = f"sweep-{parent_id[:8]}"
        state = {"searchFilter": f"tags.`mlflow.parentRunId` = '{parent_id}'",
                 "orderByKey": "metrics.`final_loss`", "orderByAsc": True,
                 "chartsSearchFilter": "^(loss|final_loss)$",
                 "groupBy": {"aggregateFunction": "average",
                             "groupByKeys": [{"mode": "tag", "groupByData": "config_group"}]}}
        self.client.set_experiment_tag(self.experiment_id, f"mlflow.sharedViewState.{key}", json.dumps(state))
        from runner.redact import redact

        page = f"/#/experiments/{self.experiment_id}/runs?compareRunsMode=CHART&viewStateShareKey={key}"
        if self.uri.startswith(("http://", "https://")):
            return redact(self.uri.rstrip("/") + page)
        return redact(f"http://127.0.0.1:5000{page}") + f" (while `{self.look()}` runs)"

    def _shared_with_live(self, parent_id: str) -> bool:
        """Whether another live process of this host took the parent over (sweep_started tags it
        with the pid of the last command that opened it: the same sweep started again)."""
        from runner.tracking.worker import owner_pid

        tags = self.client.get_run(parent_id).data.tags
        pid = tags.get("runner.pid", "")
        return (tags.get("runner.host") == host() and pid.isdigit() and int(pid) != owner_pid()
                and alive(int(pid)))

    def sweep_updated(self, parent_id: str | None, tags: dict) -> None:
        from mlflow.entities import RunTag

        if parent_id and tags:
            self.client.log_batch(parent_id, tags=[RunTag(k, v) for k, v in mlflow_tags(tags).items()])

    def sweep_failed(self, parent_id: str | None, error: str) -> None:
        if parent_id:
            self.client.set_tag(parent_id, "error", error)
            self.client.set_terminated(parent_id, "FAILED")

    def sweep_killed(self, parent_id: str | None) -> None:
        """The parent and its jobs that were running end KILLED: those in launcher processes
        (joblib, ray), which the launcher has killed (the reaper has just marked them FAILED), too."""
        if not parent_id:
            return
        client, before = self.client, len(self.reaped)
        self.reap_stale()  # the jobs the launcher has just killed are the stale ones now
        running = self._search(f"tags.`{PARENT}` = '{parent_id}' and attributes.status = 'RUNNING'")
        reaped = [client.get_run(r) for r in self.reaped[before:]]
        for child in [*running, *(r for r in reaped if r.data.tags.get(PARENT) == parent_id)]:
            if child.data.tags.get("runner.stale"):
                client.delete_tag(child.info.run_id, "runner.stale")
                self.reaped.remove(child.info.run_id)
            client.set_tag(child.info.run_id, "runner.interrupted", "the sweep was interrupted (KILLED)")
            client.set_terminated(child.info.run_id, "KILLED")
        client.set_terminated(parent_id, "KILLED")

    # --- questions ---------------------------------------------------------------------------------------
    def finished_run(self, config_hash: str, parent_id: str | None = None) -> str | None:
        runs = self._search(f"tags.config_hash = '{config_hash}' and attributes.status = 'FINISHED'"
                            + self._child_of(parent_id), limit=1)
        return runs[0].info.run_id if runs else None

    def final_loss_of(self, run_id: str) -> float | None:
        try:
            return self.client.get_run(run_id).data.metrics.get("final_loss")
        except Exception:
            return None

    @staticmethod
    def _child_of(parent: str | None) -> str:
        return f" and tags.`{PARENT}` = '{parent}'" if parent else ""

    def run_dir_of(self, run_id: str) -> str | None:
        try:
            return self.client.get_run(run_id).data.tags.get("run_dir")
        except Exception:
            return None

    def children(self, parent_id: str | None, curves: int = 50) -> list[dict]:
        """A sweep's child runs as plain dicts (runner.sweep aggregates them); `loss` (the curve)
        for the first `curves` finished ones (one per config hash)."""
        runs = self._search(f"tags.`{PARENT}` = '{parent_id}'", "attributes.start_time ASC", 10000)
        out, drawn = [], set()
        for r in runs:
            tags = r.data.tags
            row = {"run_id": r.info.run_id, "status": r.info.status, "start_time": r.info.start_time,
                   "config_group": tags.get("config_group", "(defaults)"), "config_hash": tags.get("config_hash"),
                   "seed": tags.get("seed"), "final_loss": r.data.metrics.get("final_loss"),
                   "objective": tags.get("objective")}
            if (r.info.status == "FINISHED" and row["final_loss"] is not None and len(drawn) < curves
                    and row["config_hash"] not in drawn):
                drawn.add(row["config_hash"])
                history = self.client.get_metric_history(r.info.run_id, "loss")
                row["loss"] = [m.value for m in sorted(history, key=lambda m: m.step)]
            out.append(row)
        return out

    def runs(self, parent_id: str | None = None) -> list[dict]:
        """The experiment's runs (or one sweep's children) as plain dicts (runner.compare). Read
        only: LookupError for an experiment the store does not have."""
        from runner.tracking.mlflow.store import read_client

        client = read_client(self.uri)
        exp = client.get_experiment_by_name(self.experiment)
        if exp is None:
            raise LookupError(f"no experiment '{self.experiment}' in {self.uri}")
        if parent_id:
            from runner.tracking.mlflow.store import whole_run_id

            parent_id = whole_run_id(client, parent_id, self.uri)
            check_parent(client, parent_id, self.uri)
        query = f"tags.`{PARENT}` = '{parent_id}'" if parent_id else ""
        runs = client.search_runs([exp.experiment_id], filter_string=query, max_results=50000)
        return [{"run_id": r.info.run_id, "status": r.info.status, "name": r.info.run_name,
                 "parent_id": r.data.tags.get(PARENT), "tags": dict(r.data.tags), "params": dict(r.data.params), "metrics": dict(r.data.metrics),
                 "final_loss": r.data.metrics.get("final_loss")} for r in runs]

    def whole_run_id(self, run_id: str) -> str:
        from runner.tracking.mlflow.store import read_client, whole_run_id

        return whole_run_id(read_client(self.uri), run_id, self.uri)

    def fetch(self, run_id: str, names: tuple, dst: Path) -> dict:
        from runner.tracking.mlflow.store import fetch_run

        return fetch_run(self.uri, run_id, Path(dst), tuple(names))

    @staticmethod
    def preimport(settings: dict) -> None:
        from runner.tracking.mlflow.store import preimport

        preimport(str(settings.get("uri") or ""), str(settings.get("log_model", True)).lower() not in ("false", "0"))


def check_parent(client, parent_id: str, uri: str) -> None:
    """LookupError unless `parent_id` is a sweep's parent run in the store (a child's id or a
    single run's used to list "no runs", exit 0)."""
    from mlflow.exceptions import MlflowException

    from runner.redact import redact

    try:
        run = client.get_run(parent_id)
    except MlflowException:
        raise LookupError(redact(f"--sweep {parent_id}: no such run in {uri}")) from None
    tags = run.data.tags
    if tags.get("runner.role") == "sweep" or "sweep_hash" in tags:
        return
    parent = tags.get(PARENT)
    what = f"a child of sweep {parent}" if parent else "a single run"
    raise LookupError(f"--sweep {parent_id}: that run is {what}, not a sweep's parent run"
                      + (f": use --sweep {parent}" if parent else ""))
