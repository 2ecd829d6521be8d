"""Model comparison by PSIS-LOO: runs on the same data ranked by their expected log pointwise
predictive density (ArviZ's `compare` on each run's inference_data.nc). Used by
`runner.compare --loo` (files read back from the store) and by a sweep's end (its jobs' run
directories): the table as loo.json and loo.txt. Plain files in, rows out; no MLflow.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from runner.errors import ConfigError

COLUMNS = ("rank", "run", "elpd_loo", "se", "elpd_diff", "dse", "p_loo", "pareto_k_bad", "weight", "final_loss", "run_id")


def data_digest(idata) -> str:
    """The observed data of an InferenceData, hashed: runs compared by LOO must share it."""
    h = hashlib.sha256()
    obs = getattr(idata, "observed_data", None)
    for name in sorted(obs.data_vars) if obs is not None else []:
        h.update(name.encode())
        h.update(np.ascontiguousarray(obs[name].values).tobytes())
    return h.hexdigest()[:16]


def compare(runs: list[dict]) -> list[dict]:
    """`runs`: dicts with label, path (an inference_data.nc), run_id and final_loss. Returns one
    row per run, best elpd first, as `arviz.compare` ranks them (ic=loo, stacking weights), with
    the number of observations whose Pareto k is above ArviZ's threshold for the draws it has
    (`pareto_k_bad`: where PSIS-LOO is not reliable; a point estimate has every one)."""
    import warnings

    from runner.inference_data import import_arviz

    az = import_arviz()
    if len(runs) < 2:
        raise ConfigError(f"--loo needs at least 2 runs with an inference_data.nc, got {len(runs)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = {r["label"]: read(az, r) for r in runs}
        digests = {data_digest(d) for d in data.values()}
        if len(digests) > 1:
            raise ConfigError(f"the runs are on {len(digests)} different data sets: LOO compares runs "
                              "on the same data (sweep over model, guide or inference, not data)")
        loos = {label: az.loo(d, pointwise=True) for label, d in data.items()}
        table = az.compare(loos, ic="loo")
    by_label = {r["label"]: r for r in runs}
    rows = []
    for label, row in table.iterrows():
        loo = loos[label]
        bad = int(np.sum(np.asarray(loo.pareto_k) > float(loo.good_k)))
        rows.append({"rank": int(row["rank"]), "run": label, "elpd_loo": float(row["elpd_loo"]),
                     "se": float(row["se"]), "elpd_diff": float(row["elpd_diff"]), "dse": float(row["dse"]),
                     "p_loo": float(row["p_loo"]), "pareto_k_bad": f"{bad}/{np.size(loo.pareto_k)}",
                     "weight": float(row["weight"]), "final_loss": by_label[label].get("final_loss"),
                     "run_id": by_label[label].get("run_id") or ""})
    return rows


#: the first bytes of the files runner writes (netCDF4 is HDF5) and of netCDF3
SIGNATURES = (b"\x89HDF\r\n\x1a\n", b"CDF\x01", b"CDF\x02")


def read(az, run: dict):
    """A run's inference_data.nc read back as untrusted data: an ArviZ netCDF file (checked by its
    first bytes before it is opened) with a finite log-likelihood group; else one ConfigError line
    naming the run and the file. Nothing in it is executed (netCDF holds arrays only)."""
    from runner.errors import describe
    from runner.readback import first_bytes

    path = Path(run["path"])
    what = f"run {run.get('run_id') or run['label']}: {path.name}"
    first_bytes(path, SIGNATURES, what, "a netCDF file", ": it cannot be ranked by LOO")
    try:
        idata = az.from_netcdf(str(path))
    except Exception as e:
        raise ConfigError(f"{what} cannot be read as ArviZ InferenceData ({describe(e)})") from None
    loglik = getattr(idata, "log_likelihood", None)
    if loglik is None or not list(loglik.data_vars):
        raise ConfigError(f"{what} has no log_likelihood group: LOO needs the pointwise log-likelihood")
    for name in loglik.data_vars:
        values = np.asarray(loglik[name].values, dtype=float)
        bad = int(np.size(values) - np.isfinite(values).sum())
        if bad:
            raise ConfigError(f"{what}: log-likelihood '{name}' is NaN or inf at {bad} of {values.size} values: "
                              "it cannot be ranked")
    return idata


def render(rows: list[dict]) -> str:
    """The table as text (elpd and its standard errors to 2 decimals, as ArviZ prints them)."""
    def cell(key, v):
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.6g}" if key == "final_loss" else f"{v:.2f}"
        return str(v)

    table = [list(COLUMNS)] + [[cell(k, r[k]) for k in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table)
    flagged = [r["run"] for r in rows if not r["pareto_k_bad"].startswith("0/")]
    if flagged:
        text += (f"\nnote: {len(flagged)} of {len(rows)} runs have observations with Pareto k above ArviZ's "
                 "threshold (pareto_k_bad): their elpd_loo is not reliable (a point estimate flags every one)")
    return text


def labels(runs: list[dict]) -> list[dict]:
    """Unique labels (a run's name, with its id's first characters where names repeat)."""
    seen: dict[str, int] = {}
    for r in runs:
        seen[r["label"]] = seen.get(r["label"], 0) + 1
    return [{**r, "label": r["label"] if seen[r["label"]] == 1 else f"{r['label']} ({r.get('key') or r['run_id'][:8]})"}
            for r in runs]


def write(rows: list[dict], out: Path) -> list[str]:
    """loo.json and loo.txt in `out`; returns their names."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "loo.json").write_text(json.dumps(rows, indent=1))
    (out / "loo.txt").write_text(render(rows) + "\n")
    return ["loo.json", "loo.txt"]


def sweep_table(sweep_dir: Path, status_file: str) -> list[dict]:
    """A sweep's LOO table from its jobs' run directories (runner_status.json, inference_data.nc):
    [] when fewer than 2 jobs left one or they are on different data."""
    from runner.inference_data import FILE

    runs = []
    for path in sorted(Path(sweep_dir).glob(f"*/{status_file}")):
        status = json.loads(path.read_text())
        nc = path.parent / FILE
        if status.get("status") == "run" and nc.is_file():
            runs.append({"label": status.get("config_group") or path.parent.name, "path": nc,
                         "run_id": status.get("run_id") or "", "final_loss": status.get("final_loss"),
                         "key": (status.get("run_id") or "")[:8] or path.parent.name})
    if len(runs) < 2:
        return []
    common = set.intersection(*(set(r["label"].split()) for r in runs))  # the overrides every job has
    runs = [{**r, "label": " ".join(t for t in r["label"].split() if t not in common) or r["label"]} for r in runs]
    try:
        return compare(labels(runs))
    except ConfigError:  # different data sets: no table (runner.compare --loo says why)
        return []
