"""`python -m runner.compare`: an experiment's runs as a table, best final loss first.

Columns: the config choices and params that differ between the runs, final loss, status, run id.
`--sweep <parent run id>` limits the table to one sweep's child runs; with `--loo` they are ranked
by PSIS-LOO instead (runner/loo.py: arviz.compare on each run's inference_data.nc from the store).
"""
from __future__ import annotations

import argparse
import math
import sys

CHOICES = ("model", "guide", "loss", "optim", "data", "inference")
SKIP_PARAMS = ("jax_version", "key_derivation", "tracking.", "jax.", "hydra.")


def table(runs: list[dict]) -> list[list[str]]:
    columns = [c for c in CHOICES if len({r["tags"].get(c) for r in runs}) > 1]
    keys = sorted({k for r in runs for k in r["params"]})
    varying = [k for k in keys if not k.startswith(SKIP_PARAMS) and k not in CHOICES
               and not k.endswith(("._target_", "._partial_"))
               and len({r["params"].get(k) for r in runs}) > 1]

    def loss(r):
        v = r["final_loss"]
        return math.inf if v is None or math.isnan(v) else v

    rows = [[*columns, *varying, "final_loss", "status", "run_id"]]
    for r in sorted(runs, key=loss):
        rows.append([*(r["tags"].get(c, "") for c in columns), *(r["params"].get(k, "") for k in varying),
                     "" if r["final_loss"] is None else f"{r['final_loss']:.6g}", r["status"], r["run_id"]])
    return rows


def render(rows: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m runner.compare", description=__doc__.splitlines()[0])
    p.add_argument("--uri", default="sqlite:///mlflow.db", help="MLflow tracking URI")
    p.add_argument("--experiment", default="runner", help="experiment name")
    p.add_argument("--sweep", metavar="PARENT_RUN_ID", help="only the child runs of this sweep")
    p.add_argument("--timeout", default="5", help="seconds to reach the store (default 5)")
    p.add_argument("--loo", action="store_true",
                   help="rank the sweep's runs by PSIS-LOO (arviz.compare on their inference_data.nc)")
    args = p.parse_args(argv)
    if args.loo and not args.sweep:
        print("runner.compare: error: --loo needs --sweep <parent run id> (LOO compares runs on the same data)",
              file=sys.stderr)
        return 2
    from runner.tracking import TrackingError, check_reachable, check_timeout, list_runs

    try:  # one line within the deadline, not MLflow's minutes of retries; never creates a store
        check_reachable(args.uri, check_timeout(args.timeout), create=False)
        runs = list_runs(args.uri, args.experiment, args.sweep)
    except (LookupError, TrackingError) as e:
        print(f"runner.compare: error: {e}", file=sys.stderr)
        return 2
    runs = [r for r in runs if args.sweep or r["tags"].get("runner.role") != "sweep"]
    if not runs:
        print("no runs")
        return 0
    if args.loo:
        from runner.errors import ConfigError

        try:
            print(loo_table(args.uri, [r for r in runs if r["status"] == "FINISHED"]))
        except (ConfigError, LookupError) as e:
            print(f"runner.compare: error: {e}", file=sys.stderr)
            return 2
        return 0
    print(render(table(runs)))
    return 0


def loo_table(uri: str, runs: list[dict]) -> str:
    """The runs ranked by PSIS-LOO, their inference_data.nc read back from the store."""
    import tempfile
    from pathlib import Path

    from runner import loo
    from runner.inference_data import FILE
    from runner.tracking import fetch_run

    with tempfile.TemporaryDirectory() as tmp:
        found = []
        for r in runs:
            dst = Path(tmp) / r["run_id"]
            fetch_run(uri, r["run_id"], dst, (FILE,))
            if (dst / FILE).is_file():
                found.append({"label": r["name"] or r["run_id"], "path": dst / FILE, "run_id": r["run_id"],
                              "final_loss": r["final_loss"]})
        return loo.render(loo.compare(loo.labels(found)))


if __name__ == "__main__":
    sys.exit(main())
