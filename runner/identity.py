"""A run's identity: the hash of its config (a finished run of the same config is not run again),
its readable name, the label of a sweep's job and configuration group, its tags (choices,
provenance, the machine). Plain data; no tracking backend's words."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

CHOICE_GROUPS = ("model", "guide", "loss", "optim", "data", "inference", "check")


def result_overrides(overrides) -> list[str]:
    """Overrides that can change a result (not where it is logged or cached)."""
    return [o for o in overrides if not re.match(r"^[+~]*(tracking[.=]|jax[.=]|rerun=|progress=|timing=|hydra)", o)]


def group_label(overrides) -> str:
    """A job's overrides without its seed: the configuration that seeds are replicates of."""
    kept = [o for o in result_overrides(overrides) if not re.match(r"^[+~]*seed=", o)]
    return " ".join(sorted(kept)) or "(defaults)"


def short_value(key: str, value: str, width: int = 32) -> str:
    """A value as a person reads it in a name or a description: a file by its name, not its
    whole path; anything longer than `width` cut in the middle."""
    if key.endswith(".path") and "/" in value:
        value = Path(value).name
    return value if len(value) <= width else f"{value[:width // 2 - 1]}..{value[-(width // 2 - 1):]}"


def run_name(choices: dict, label: str, overrides) -> str:
    """A name a person can read: the model, the method's label (SVI: the guide), then the
    overrides that change the result, e.g. `gmm-autodelta-lr0.1-seed3`. A file is named by its
    stem and any value longer than 24 characters is cut in the middle, so a long data.path does
    not fill the runs table (the whole value is in the params and the tag `overrides`)."""
    head = [choices.get("model") or "run", label]
    rest = []
    kept = [o.lstrip("+~").partition("=") for o in result_overrides(overrides or [])]
    kept = [(k, v) for k, _, v in kept if k not in ("model", "guide", "inference", "model.fn") and not k.startswith("hydra")]
    lasts = [k.split(".")[-1] for k, _ in kept]
    for key, value in kept:
        if key.endswith(".path"):  # a file: its name, not its whole path
            rest.append(short_value("", Path(value).stem, 24))
            continue
        value = short_value("", value, 24)
        # a key by its last part, or whole where two share it (inference.samples, posterior.samples)
        name = key.replace(".", "_") if lasts.count(key.split(".")[-1]) > 1 else key.split(".")[-1]
        rest.append(value if "." not in key and key in CHOICE_GROUPS else f"{name}{value}")
    return re.sub(r"[^\w.\-]+", "_", "-".join(str(x) for x in [*head, *rest] if x))[:250]


def model_label(exp, choices: dict) -> str:
    """model=fn: the function's name says more than the choice's."""
    return exp.model.name if choices.get("model") in (None, "fn") else choices["model"]


def run_tags(exp, job) -> dict:
    """The run's tags: the choices that act on its method's result, where its files are, its
    config hash, method, provenance and machine; a sweep's job adds its overrides and group."""
    tags = {**{g: c for g, c in job.choices.items() if c is not None and g in exp.inference.groups},
            "run_dir": str(job.run_dir), "config_hash": exp.config_hash, "inference": exp.inference.name, "seed": exp.seed,
            **machine_tags(), **job.tags()}
    if getattr(exp.model, "fn_path", None):
        tags["model.fn"] = exp.model.fn_path
    return tags


def name_of(exp, job) -> str:
    """The run's readable name (`run_name` of its choices and overrides)."""
    return run_name({**job.choices, "model": model_label(exp, job.choices)}, exp.inference.label(job.choices),
                    job.overrides)


def run_start(exp, job, resume=None):
    """What the run is opened with: its name, tags, config hash, parent and twin policy; with
    `resume` (a run directory), that directory's interrupted run is reopened."""
    from runner.tracking.base import RunStart

    return RunStart(name=name_of(exp, job), tags=run_tags(exp, job), config_hash=exp.config_hash,
                    parent_id=job.parent_id, resumes=None if resume is None else str(resume),
                    yield_to_finished=job.yield_to_finished)


#: keys a resumed run may change (display and where to resume from): its params keep the first values
RESUME_FREE = ("resume", "progress", "timing")


def run_params(exp, resumed: bool = False) -> dict:
    """Every leaf of the resolved config and the JAX version; a resumed run keeps its own
    (params are written once) of resume=, progress= and checkpoint.*."""
    import jax

    params = {**exp.params, "jax_version": jax.__version__}
    if resumed:
        params = {k: v for k, v in params.items() if k not in RESUME_FREE and not k.startswith("checkpoint.")}
    return params


def run_record(exp, job, start, out, written, params: dict):
    """The run's record for the tracking backend: its name and tags (`start`'s, and the fit's),
    params, scalars, curves, files, input data and, when predictions can be made from it, its
    model files."""
    from runner.outputs import predict_files
    from runner.tracking.base import RunRecord

    model = None
    if exp.data is not None and not out.failed and (out.params is not None or out.latents is not None or out.draws):
        model = {"files": predict_files(job.run_dir), "method": exp.inference.name, "data": exp.data,
                 "constants": dict(getattr(exp.model, "constants", None) or {})}
    return RunRecord(name=start.name, tags={**start.tags, **out.tags},
                     params=params, scalars=written.scalars,
                     curves=out.curves, curve_steps=out.curve_steps, artifact_dir=job.run_dir, artifacts=written.files,
                     status="FAILED" if out.failed else "FINISHED", dataset=dataset_info(exp, job.choices),
                     model=model, parent_id=job.parent_id)


def child_records(start, children: list, params: dict, run_dir: Path) -> list:
    """The records of a run's children (SVI's replicates; `children`: [(child, its files)], as
    runner.outputs.Written holds them): the run's tags, less its group and seed, and their own."""
    from runner.tracking.base import RunRecord

    tags = {k: v for k, v in start.tags.items() if k not in ("config_group", "seed")}
    return [RunRecord(name=child.name, tags={**tags, **child.tags}, params={**params, **child.params},
                      scalars=child.scalars, curves=child.curves, curve_steps=child.curve_steps,
                      artifact_dir=run_dir / child.folder, artifacts=files)
            for child, files in children]


def git_commit(folder: Path) -> str | None:
    """HEAD of the git repository that holds `folder`, or None (no git, not a repository)."""
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def runner_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("runner")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def machine_tags() -> dict:
    """Where the run ran: JAX backend, device kind and count; provenance: the git commit of the
    user's project (the repository of the current directory) as the run's source commit, runner's
    own version (and its commit when runner runs from a git checkout)."""
    import os

    import jax

    devices = jax.devices()
    tags = {"jax.backend": jax.default_backend(), "jax.device_kind": devices[0].device_kind,
            "jax.device_count": len(devices), "runner.version": runner_version()}
    project = git_commit(Path(os.getcwd()))
    if project:
        tags["source.git_commit"] = project
    here = Path(__file__).resolve().parent
    own = git_commit(here) if (here.parent / ".git").exists() else None
    if own:
        tags["runner.git_commit"] = own
    return tags


def dataset_info(exp, choices: dict) -> dict | None:
    """What the tracking backend records as the run's input: name, source, the array."""
    if exp.data is None:
        return None
    data = exp.data
    array = {k: np.asarray(v) for k, v in data.items()} if isinstance(data, dict) else np.asarray(data)
    return {"name": choices.get("data") or "data", "source": exp.data_source or str(choices.get("data")),
            "array": array}


#: config keys that do not change a fit's result, left out of its hash
NOT_HASHED = ("tracking", "jax", "rerun", "hydra", "progress", "timing", "checkpoint", "resume")


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


#: a value interpolated from a key left out of the hash (SVI's curve_points: the tracking's
#: max_points_per_curve) is left out too: where a run is logged does not make it another run
FROM_NOT_HASHED = re.compile(r"^\$\{(?:oc\.select:)?(?:" + "|".join(NOT_HASHED) + r")[.,}]")


def config_hash(cfg: DictConfig) -> str:
    """The resolved config (less where it is logged), and the contents of the files it names: the
    data file and a function model's source, so an edited model or data set is not 'already run'."""
    data = OmegaConf.to_container(cfg, resolve=True)
    kept = {k: v for k, v in data.items() if k not in NOT_HASHED}
    for path in interpolated_from_not_hashed(OmegaConf.to_container(cfg, resolve=False)):
        node = kept
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    files = {key: file_digest(path) for key, path in named_files(data).items()}
    return digest({**kept, "_files": files} if files else kept)


def interpolated_from_not_hashed(node, path=()) -> list[tuple]:
    """The paths of the leaves whose value is an interpolation of a key left out of the hash."""
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in interpolated_from_not_hashed(v, (*path, k))]
    return [path] if isinstance(node, str) and FROM_NOT_HASHED.match(node) else []


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
