"""`python -m runner.compare`: an experiment's runs as a table that fits a terminal, one row per
run, best final loss first.

Columns: the config choices that differ, then the params that differ between the runs (a param
that only some runs have follows from a choice and is left out; one name of two with the same
values; a run's params that its method does not take, such as a NUTS run's optim.lr and steps,
are blank), final_loss (and final_loss_std, over a replicated run's replicates), status, the run
id's first 8 characters; a column that is the same, or blank, in every row is left out. A run's
replicates (child runs tagged `replicate`) are its row. Runs of an objective other than the first
(a MAP fit's negative log joint beside negative ELBOs) are ranked apart, below a line saying why.
Long values are cut in the middle, and differing columns that do not fit the terminal's width are
left out (named below the table). `--all`: every differing param and every metric, uncut, whole
run ids, whatever the width. `--sweep <parent run id>` (whole, or its first characters): one sweep's child runs only; with
`--loo` they are ranked by PSIS-LOO instead (runner/loo.py: arviz.compare on each run's
inference_data.nc from the store).
The store is only read: a sqlite file that is not there is one line and exit 2, never a new store;
a server or database is reached within one deadline (`--timeout`, 5 s).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

CHOICES = ("model", "guide", "loss", "optim", "inference", "data", "check")  # the config groups, as chosen
SKIP_PARAMS = ("jax_version", "key_derivation", "tracking.", "jax.", "hydra.", "checkpoint.")
#: params that say how a command ran, not what it fitted (its progress line, its timing line, a re-run)
CONTROL = ("progress", "timing", "rerun", "resume")
#: groups whose params act on a run only where its method takes the group (a run is tagged with
#: the choices its method takes: a NUTS run has no guide, loss or optim)
METHOD_GROUPS = ("guide", "loss", "optim", "check")
KEY_METRICS = ("final_loss", "final_loss_std")  # every method logs final_loss (EM: -avg_loglik); a
# replicated run, the std of its replicates' final losses (final_loss is their mean)
CELL = 24  # characters of a value shown by default
SHORT_ID = 8  # characters of a run id shown by default (--all: the whole id)
#: why a run of another objective is ranked apart from the first kind's (runner.sweep.RANKED_FIRST)
APART = {"map": "a MAP loss (a negative log joint) is not an ELBO"}


def fold_replicates(runs: list[dict]) -> list[dict]:
    """One row per run: a replicated run's children (tag `replicate`) are left out when their
    run is listed, which records them already: `replicates` (param), their mean `final_loss` and
    `final_loss_std` (metrics)."""
    ids = {r["run_id"] for r in runs}
    return [r for r in runs if not ("replicate" in r["tags"] and r.get("parent_id") in ids)]


def acting(runs: list[dict]) -> list[dict]:
    """Each run with the params that act on its fit: every run logs the whole composed config, so a
    NUTS run beside SVI runs has optim.lr and steps it never used. A group's params (optim.lr) only
    where the run is tagged with that group's choice; a run-level setting that a method takes as
    its own (steps, as inference.steps) only where the run's method has it."""
    own = {k[len("inference."):] for r in runs for k in r["params"]
           if k.startswith("inference.") and "." not in k[len("inference."):]}

    def acts(key: str, run: dict) -> bool:
        group, dot, _ = key.partition(".")
        if dot and group in METHOD_GROUPS and group not in run["tags"]:
            return False  # a group its method does not take
        return not (key in own and f"inference.{key}" not in run["params"])  # a setting its method does not take

    return [{**r, "params": {k: v for k, v in r["params"].items() if acts(k, r)}} for r in runs]


def ranked_groups(runs: list[dict]) -> list[tuple[str | None, list[dict]]]:
    """[(objective, its runs best final loss first)]: the first kind (an ELBO, runs that do not
    say theirs: EM, NUTS, older runs) first, then each other objective (MAP) ranked apart."""
    from runner.sweep import RANKED_FIRST

    def loss(r):
        v = r["final_loss"]
        return math.inf if v is None or math.isnan(v) else v

    kinds = sorted({r["tags"].get("objective") for r in runs} - {None})
    first = next((k for k in RANKED_FIRST if k in kinds), kinds[0] if kinds else None)
    groups = [(first, [r for r in runs if r["tags"].get("objective") in (first, None)])]
    groups += [(k, [r for r in runs if r["tags"].get("objective") == k]) for k in kinds if k != first]
    return [(k, sorted(g, key=loss)) for k, g in groups if g]


def _alias_rank(key: str):
    """Of two params with the same values (steps and inference.steps, optim.lr and hints.lr),
    the one shown: not a model's hint, then the shorter name."""
    return (key.startswith("hints."), len(key), key)


def varying_params(runs: list[dict], everything: bool = True) -> list[str]:
    """Params that differ between the runs (never where runs are logged, the jax settings, a
    `_target_`, or a second name of the same values: inference.steps beside steps). Not
    `everything`: those that differ between runs of the same choices first (what a person
    overrode: optim.lr, seed), then those every run has (steps, a model's hints); a param that
    only some runs have follows from a choice (guide.init_scale, model.K) and is left out."""
    keys = sorted({k for r in runs for k in r["params"]})
    differ = [k for k in keys if not k.startswith(SKIP_PARAMS) and k not in CHOICES and k not in CONTROL
              and not k.endswith(("._target_", "._partial_"))
              and len({_blank(r["params"].get(k)) for r in runs}) > 1]
    seen: dict = {}
    for k in sorted(differ, key=_alias_rank):
        seen.setdefault(tuple(_blank(r["params"].get(k)) for r in runs), k)
    differ = [k for k in differ if k in seen.values()]
    if everything:
        return differ
    within = [k for k in differ if any(len({_blank(r["params"].get(k)) for r in g}) > 1
                                       for g in _by_choices(runs).values())]
    shared = [k for k in differ if k not in within and all(k in r["params"] for r in runs)]
    return within + shared


def _by_choices(runs: list[dict]) -> dict:
    groups: dict = {}
    for r in runs:
        groups.setdefault(tuple(r["tags"].get(c) for c in CHOICES), []).append(r)
    return groups


def _blank(value) -> str:
    """A value as a cell: a param the run does not have, or None, is blank."""
    return "" if value is None or value == "None" else str(value)


def metric_names(runs: list[dict], everything: bool) -> list[str]:
    if not everything:
        return list(KEY_METRICS)
    have = {k for r in runs for k in (r.get("metrics") or {})}
    return [*KEY_METRICS, *sorted(have - set(KEY_METRICS))]


def fmt(value) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def table(runs: list[dict], everything: bool = False) -> list:
    """The rows to print: a header, then one list of cells per run (replicates folded into their
    run), best final loss first, each objective apart from the first ranked on its own below a
    line (a str) saying why. Columns: the choices that differ, the params that differ, the key
    metrics (`everything`: every metric), status, run id; a column whose cells are all the same
    (constant, or blank) is left out."""
    from runner.identity import short_value

    runs = acting(fold_replicates(runs))
    varying = varying_params(runs, everything)
    metrics = [m for m in metric_names(runs, everything) if m not in varying]
    names = [*CHOICES, *varying, *metrics, "status", "run_id"]

    def cells(r):
        values = {**(r.get("metrics") or {}), "final_loss": r["final_loss"]}
        choices = [_blank(r["tags"].get(c)) for c in CHOICES]
        params = [_blank(r["params"].get(k)) for k in varying]
        if not everything:
            choices = [short_value(c, v, CELL) for c, v in zip(CHOICES, choices)]
            params = [short_value(k, v, CELL) for k, v in zip(varying, params)]
        return [*choices, *params, *(fmt(values.get(m)) for m in metrics), r["status"],
                r["run_id"] if everything else r["run_id"][:SHORT_ID]]

    groups = ranked_groups(runs)
    body = [(kind, [cells(r) for r in group]) for kind, group in groups]
    rows_all = [row for _, rows in body for row in rows]
    keep = [i for i, name in enumerate(names)
            if name in ("final_loss", "run_id") or len({row[i] for row in rows_all}) > 1]
    out = [[names[i] for i in keep]]
    first = groups[0][0] if groups else None
    for n, (kind, rows) in enumerate(body):
        if n:
            why = APART.get(kind, f"its loss is not {(first or 'the first').upper()}'s")
            out.append(f"-- {kind.upper()} runs, ranked apart: {why} --")
        out += [[row[i] for i in keep] for row in rows]
    return out


def render(rows: list) -> str:
    """Aligned columns; a line (a str among the rows) as it is."""
    cells = [row for row in rows if not isinstance(row, str)]
    widths = [max(len(str(row[i])) for row in cells) for i in range(len(cells[0]))]
    return "\n".join(row if isinstance(row, str) else
                     "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def drop_order(runs: list[dict]) -> list[str]:
    """The columns `fit` leaves out first: params every run has (from the right: a model's
    settings), final_loss_std, a choice that follows from the choices before it (loss and data
    from the model), then the params a person varied between runs of the same choices (from the
    right), then the other choices but the first (from the right). Replicates folded, as in the
    table."""
    runs = acting(fold_replicates(runs))
    choices = [c for c in CHOICES if len({r["tags"].get(c) for r in runs}) > 1]
    implied = [c for i, c in enumerate(choices) if i and _follows(runs, choices[:i], c)]
    params = varying_params(runs, everything=False)
    within = [k for k in params if any(len({_blank(r["params"].get(k)) for r in g}) > 1
                                       for g in _by_choices(runs).values())]
    shared = [k for k in params if k not in within]
    rest = [c for c in choices[1:] if c not in implied]
    std = ["final_loss_std"] if any("final_loss_std" in (r.get("metrics") or {}) for r in runs) else []
    return [*reversed(shared), *std, *reversed(implied), *reversed(within), *reversed(rest)]


def _follows(runs: list[dict], before: list[str], choice: str) -> bool:
    """Whether the runs' `choice` is one value for each combination of the choices `before` it."""
    seen: dict = {}
    return all(seen.setdefault(tuple(r["tags"].get(c) for c in before), r["tags"].get(choice))
               == r["tags"].get(choice) for r in runs)


def fit(rows: list, width: int, order: list[str]) -> tuple[list, list[str]]:
    """Leave out columns, in `order`, until the table (its lines of cells) is at most `width`
    wide; (rows, the names left out, in table order)."""
    dropped = []
    for name in order:
        if _width(rows) <= width:
            break
        if name not in rows[0]:
            continue
        i = rows[0].index(name)
        dropped.append(name)
        rows = [row if isinstance(row, str) else row[:i] + row[i + 1:] for row in rows]
    return rows, dropped


def _width(rows: list) -> int:
    return max(len(line) for row, line in zip(rows, render(rows).splitlines()) if not isinstance(row, str))


def main(argv=None) -> int:
    import shutil

    p = argparse.ArgumentParser(prog="python -m runner.compare", description=__doc__.splitlines()[0])
    p.add_argument("--uri", help="the tracking store (default: runner's tracking.uri)")
    p.add_argument("--experiment", help="experiment name (default: runner's tracking.experiment)")
    p.add_argument("--sweep", metavar="PARENT_RUN_ID",
                   help="only the child runs of this sweep (its parent's whole id, or its first 4+ characters)")
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
    rows = rows_all = table(runs, args.everything)
    dropped, width = [], shutil.get_terminal_size((120, 24)).columns
    if not args.everything:
        rows, dropped = fit(rows, width, drop_order(runs))
    print(render(rows))
    if dropped:
        import textwrap

        dropped.sort(key=rows_all[0].index)
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
