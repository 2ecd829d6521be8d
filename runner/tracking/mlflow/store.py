"""MLflow's client, used by the MLflow backend (backend.py) in the tracking worker process: the
store's lock, batched logging within MLflow's limits, files, tables, datasets, the tags that mark
a run's owner process."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

from runner.errors import describe

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
    import warnings

    import mlflow.data
    import mlflow.exceptions
    from mlflow.entities import DatasetInput, InputTag

    with warnings.catch_warnings():  # a loader name as source: MLflow warns it could be several kinds
        warnings.simplefilter("ignore", UserWarning)
        ds = mlflow.data.from_numpy(array, source=source, name=name)
    inputs = [DatasetInput(ds._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "training")])]
    try:
        client.log_inputs(run_id, datasets=inputs)
    except mlflow.exceptions.MlflowException as e:
        # two commands logging the same dataset at once (a sweep started twice): the other one's
        # insert won the store's UNIQUE (experiment, name, digest); now it exists, link this run to it
        if "UNIQUE constraint" not in str(e):
            raise
        client.log_inputs(run_id, datasets=inputs)


def strided_steps(n: int, max_points: int | None) -> list[int]:
    """Every step when n <= max_points (or no cap); otherwise an even stride plus the last step.
    The sqlite store takes about 0.2 ms per metric point, so 50000 steps x 3 curves would add
    about 30 s to a run; the full curves are always in the run's metrics.json artifact."""
    if not max_points or n <= max_points:
        return list(range(n))
    stride = -(-n // max_points)
    return sorted(set(range(0, n, stride)) | {n - 1})


def params_of(params: dict) -> list:
    """MLflow Params, values cut at MLflow's length limit."""
    from mlflow.entities import Param

    return [Param(k, str(v)[:MAX_PARAM_LEN]) for k, v in params.items()]


def metrics_of(scalars: dict, curves: dict, steps: list | None, max_points: int | None) -> list:
    """MLflow Metrics: each scalar at step 0, each curve at its steps. `steps`: the step of each
    point, as the fit kept them (at most tracking.max_points_per_curve of them, the last step
    too): each point logged, the points of metrics.json; None: point i is step i, at most
    `max_points` points a curve (an even stride). A kept curve strided again lost half its points
    (2001 kept of 4000 steps, 1001 logged)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(metric_name(k), float(v), now, 0) for k, v in scalars.items()]
    for key, values in curves.items():
        if steps is not None:
            metrics += [Metric(metric_name(key), float(v), now, int(s)) for v, s in zip(values, steps)]
        else:
            metrics += [Metric(metric_name(key), float(values[i]), now, i)
                        for i in strided_steps(len(values), max_points)]
    return metrics


def linked(metrics: list, model_id: str, step: int = 0) -> list:
    """`metrics` with those at `step` linked to logged model `model_id` (as MLflow links a model
    logged at that step to the run's metrics: each is then a metric of the run and of the model)."""
    from mlflow.entities import Metric

    return [Metric(m.key, m.value, m.timestamp, m.step, model_id=model_id) if m.step == step else m
            for m in metrics]


def metric_name(name: str) -> str:
    """A name MLflow accepts (alphanumerics, _ - . space : /, at most 250 characters): numpyro's
    param names may hold others (a flow's `auto_arn__0$params`)."""
    return re.sub(r"[^\w.\- :/]", "-", name)[:250]


def process_tags() -> dict:
    from runner.tracking.worker import host, owner_pid

    return {"runner.pid": str(owner_pid()), "runner.host": host()}


def preimport(uri: str, log_model: bool) -> None:
    """MLflow's modules, imported before the first request needs them (in the worker): for a
    database URI (sqlite:///mlflow.db) its SQLAlchemy store too, its table classes mapped (~0.6 s
    that opening the store would take after the command asked for it); last, what logging the
    model imports (mlflow.pyfunc, and GitPython, which MLflow asks for the source's commit: ~0.06 s
    at the end of the run otherwise, while the worker idles during the fit)."""
    try:
        import mlflow  # noqa: F401
        from mlflow.store.db.db_types import DATABASE_ENGINES
        from mlflow.tracking import MlflowClient  # noqa: F401

        if uri.partition(":")[0].partition("+")[0] in DATABASE_ENGINES:
            import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
            import sqlalchemy.orm

            sqlalchemy.orm.configure_mappers()
        if log_model:
            import git  # noqa: F401

            import runner.tracking.mlflow.pyfunc  # noqa: F401
    except BaseException:
        pass  # the request that needs them reports the error


def read_client(uri: str):
    """An MlflowClient for reading (the side commands), without MLflow's INFO lines."""
    import logging

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    return MlflowClient(uri)


#: a run id as MLflow makes it, and the start of one (runner.compare shows the first 8 characters)
WHOLE_RUN_ID = re.compile(r"[0-9a-f]{32}")
RUN_ID_START = re.compile(r"[0-9a-f]{4,31}")


def whole_run_id(client, run_id: str, uri: str) -> str:
    """The run id a user typed, whole: a whole id (in either case) as MLflow writes it, anything
    that is no id's start as it is; the first characters of one (4 to 31, as runner.compare and
    the sweep's links show it) the id of the one run that starts with them: among the store's
    active runs, else among its deleted ones too. LookupError when none does, or several do."""
    lowered = run_id.lower()
    if WHOLE_RUN_ID.fullmatch(lowered):
        return lowered
    if not RUN_ID_START.fullmatch(lowered):
        return run_id
    run_id = lowered
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    from runner.redact import redact

    try:
        experiments, token = [], None
        while True:
            page = client.search_experiments(view_type=ViewType.ALL, max_results=1000, page_token=token)
            experiments += [e.experiment_id for e in page]
            token = page.token
            if not token:
                break
        found = []
        for view in (ViewType.ACTIVE_ONLY, ViewType.ALL):
            found = sorted(r.info.run_id for r in client.search_runs(
                experiments, filter_string=f"attributes.run_id LIKE '{run_id}%'", run_view_type=view,
                max_results=2)) if experiments else []
            if found:
                break
    except MlflowException as e:
        raise LookupError(f"no run found for {run_id} in {redact(uri)} ({describe(e)})") from None
    if not found:
        raise LookupError(f"no run whose id starts with {run_id} in {redact(uri)}")
    if len(found) > 1:
        raise LookupError(f"run id {run_id} is ambiguous in {redact(uri)}: runs {found[0]} and {found[1]} "
                          "(at least) start with it; give more of it")
    return found[0]


def fetch_run(uri: str, run_id: str, dst: Path, names: tuple[str, ...]) -> dict:
    """Download the named artifacts of a run (those it has) into dst; return its tags.
    LookupError if the run does not exist."""
    from mlflow.exceptions import MlflowException

    client = read_client(uri)
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
