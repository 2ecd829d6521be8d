"""`python -m runner.compare`: an experiment's runs as a table that fits a terminal, best final
loss first.

Columns: the config choices and the params that differ between the runs (a param that only some
runs have follows from a choice and is left out), final_loss, status, run id; long values are
cut in the middle, and differing columns that do not fit the terminal's width are left out (named
below the table). `--all`: every differing param and every metric, uncut, whatever the width. `--sweep <parent run id>`: one sweep's child runs only;
with `--loo` they are ranked by PSIS-LOO instead (runner/loo.py: arviz.compare on each run's inference_data.nc from the store).
The store is only read: a sqlite file that is not there is one line and exit 2, never a new store;
a server or database is reached within one deadline (`--timeout`, 5 s).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

CHOICES = ("model", "guide", "loss", "optim", "data", "inference")
SKIP_PARAMS = ("jax_version", "key_derivation", "tracking.", "jax.", "hydra.")
KEY_METRICS = ("final_loss",)  # every method logs it (EM: -avg_loglik), so runs of any method rank on it
CELL = 24  # characters of a value shown by default


def varying_params(runs: list[dict], everything: bool = True) -> list[str]:
    """Params that differ between the runs (never where runs are logged, the jax settings or a
    `_target_`). Not `everything`: those that differ between runs of the same choices first (what
    a person overrode: optim.lr, seed), then those every run has (steps, a model's hints); a param
    that only some runs have follows from a choice (guide.init_scale, model.K) and is left out."""
    keys = sorted({k for r in runs for k in r["params"]})
    differ = [k for k in keys if not k.startswith(SKIP_PARAMS) and k not in CHOICES
              and not k.endswith(("._target_", "._partial_"))
              and len({r["params"].get(k) for r in runs}) > 1]
    if everything:
        return differ
    groups: dict = {}
    for r in runs:
        groups.setdefault(tuple(r["tags"].get(c) for c in CHOICES), []).append(r)
    within = [k for k in differ if any(len({r["params"].get(k) for r in g}) > 1 for g in groups.values())]
    shared = [k for k in differ if k not in within and all(k in r["params"] for r in runs)]
    return within + shared


def metric_names(runs: list[dict], everything: bool) -> list[str]:
    if not everything:
        return list(KEY_METRICS)
    have = {k for r in runs for k in (r.get("metrics") or {})}
    return ["final_loss", *sorted(have - {"final_loss"})]


def fmt(value) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def table(runs: list[dict], everything: bool = False) -> list[list[str]]:
    from runner.identity import short_value

    columns = [c for c in CHOICES if len({r["tags"].get(c) for r in runs}) > 1]
    varying = varying_params(runs, everything)
    metrics = metric_names(runs, everything)

    def cell(key, value):
        return str(value) if everything else short_value(key, str(value), CELL)

    def loss(r):
        v = r["final_loss"]
        return math.inf if v is None or math.isnan(v) else v

    rows = [[*columns, *varying, *metrics, "status", "run_id"]]
    for r in sorted(runs, key=loss):
        values = {**(r.get("metrics") or {}), "final_loss": r["final_loss"]}
        rows.append([*(cell(c, r["tags"].get(c, "")) for c in columns),
                     *(cell(k, r["params"].get(k, "")) for k in varying),
                     *(fmt(values.get(m)) for m in metrics), r["status"], r["run_id"]])
    return rows


def render(rows: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def drop_order(runs: list[dict]) -> list[str]:
    """The columns `fit` leaves out first: params every run has (from the right), then choices
    but the first, then the params a person varied between runs of the same choices."""
    choices = [c for c in CHOICES if len({r["tags"].get(c) for r in runs}) > 1]
    params = varying_params(runs, everything=False)
    groups: dict = {}
    for r in runs:
        groups.setdefault(tuple(r["tags"].get(c) for c in CHOICES), []).append(r)
    within = [k for k in params if any(len({r["params"].get(k) for r in g}) > 1 for g in groups.values())]
    shared = [k for k in params if k not in within]
    return [*reversed(shared), *reversed(choices[1:]), *reversed(within)]


def fit(rows: list[list[str]], width: int, order: list[str]) -> tuple[list[list[str]], list[str]]:
    """Leave out columns, in `order`, until the table is at most `width` wide; (rows, the names
    left out, in table order)."""
    dropped = []
    for name in order:
        if max(map(len, render(rows).splitlines())) <= width:
            break
        i = rows[0].index(name)
        dropped.append(name)
        rows = [row[:i] + row[i + 1:] for row in rows]
    return rows, dropped


def main(argv=None) -> int:
    import shutil

    p = argparse.ArgumentParser(prog="python -m runner.compare", description=__doc__.splitlines()[0])
    p.add_argument("--uri", help="the tracking store (default: runner's tracking.uri)")
    p.add_argument("--experiment", help="experiment name (default: runner's tracking.experiment)")
    p.add_argument("--sweep", metavar="PARENT_RUN_ID", help="only the child runs of this sweep")
    p.add_argument("--timeout", default="5", help="seconds to reach the store (default 5)")
    p.add_argument("--loo", action="store_true",
                   help="rank the sweep's runs by PSIS-LOO (arviz.compare on their inference_data.nc)")
    p.add_argument("--all", action="store_true", dest="everything",
                   help="every param that differs and every metric, values uncut, whatever the width")
    args = p.parse_args(argv)
    if args.loo and not args.sweep:
        print("runner.compare: error: --loo needs --sweep <parent run id> (LOO compares runs on the same data)",
              file=sys.stderr)
        return 2
    from runner.redact import redact
    from runner.tracking import TrackingError, reader

    try:  # one line within the deadline, not a client's minutes of retries; never creates a store
        backend = reader(uri=args.uri, experiment=args.experiment, timeout=args.timeout)
        runs = backend.runs(args.sweep)
    except (LookupError, TrackingError) as e:
        print(f"runner.compare: error: {redact(str(e))}", file=sys.stderr)
        return 2
    runs = [r for r in runs if args.sweep or r["tags"].get("runner.role") != "sweep"]
    if not runs:
        print("no runs")
        return 0
    if args.loo:
        from runner.errors import ConfigError

        try:
            print(loo_table(backend, [r for r in runs if r["status"] == "FINISHED"]))
        except (ConfigError, LookupError) as e:
            print(f"runner.compare: error: {e}", file=sys.stderr)
            return 2
        return 0
    rows = table(runs, args.everything)
    dropped, width = [], shutil.get_terminal_size((120, 24)).columns
    if not args.everything:
        rows, dropped = fit(rows, width, drop_order(runs))
    print(render(rows))
    if dropped:
        import textwrap

        dropped.sort(key=table(runs)[0].index)
        print(textwrap.fill(f"({len(dropped)} more differing column(s) left out to fit the terminal: "
                            f"{', '.join(dropped)}; --all shows every column)", max(width, 40)))
    return 0


def loo_table(backend, runs: list[dict]) -> str:
    """The runs ranked by PSIS-LOO, their inference_data.nc read back from the store."""
    import tempfile

    from runner import loo
    from runner.inference_data import FILE

    with tempfile.TemporaryDirectory() as tmp:
        found = []
        for r in runs:
            dst = Path(tmp) / r["run_id"]
            backend.fetch(r["run_id"], (FILE,), dst)
            if (dst / FILE).is_file():
                found.append({"label": r["name"] or r["run_id"], "path": dst / FILE, "run_id": r["run_id"],
                              "final_loss": r["final_loss"]})
        return loo.render(loo.compare(loo.labels(found)))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `| head`: the reader is done
        sys.stderr.close()
        sys.exit(0)
