"""`make gallery` (python -m runner.gallery [DIR [NAME ...]]): the README's figures, from real runs.

Each entry is a `python -m runner ...` command run as a user runs it (into a temporary run
directory and store, so the user's mlflow.db is untouched); the named plot of its run directory
is copied to DIR (default docs/gallery/). NAMEs (e.g. coin_posterior.png) make only those.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: file in the gallery -> (command-line overrides, the run's plot)
GALLERY = {
    "gmm_loss.png": (["model=gmm", "guide=autodelta"], "plots/loss.png"),
    "gmm_density.png": (["model=gmm", "guide=autodelta"], "plots/gmm.png"),
    "coin_posterior.png": (["model=coin", "guide=manual"], "plots/coin.png"),
    "multimodal_guide.png": (["model=multimodal", "guide=manual"], "plots/multimodal.png"),
    "digits_components.png": (["model=gmm", "data=digits", "model.K=10", "inference=em", "restarts=4"],
                              "plots/components.png"),
    "coin_sbc_manual.png": (["model=coin", "guide=manual", "steps=1000", "optim.lr=0.01", "check=sbc"],
                            "plots/sbc_ecdf.png"),
    "coin_sbc_autodelta.png": (["model=coin", "guide=autodelta", "steps=1000", "optim.lr=0.01", "check=sbc"],
                               "plots/sbc_ecdf.png"),
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else ROOT / "docs" / "gallery"
    wanted = argv[1:] or list(GALLERY)
    unknown = sorted(set(wanted) - set(GALLERY))
    if unknown:
        print(f"runner.gallery: error: unknown figure(s) {unknown}: choose from {sorted(GALLERY)}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[tuple, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in wanted:
            overrides, plot = GALLERY[name]
            key = tuple(overrides)
            if key not in runs:
                run_dir = Path(tmp) / f"run{len(runs)}"
                cmd = [sys.executable, "-m", "runner", *overrides, f"hydra.run.dir={run_dir}",
                       f"tracking.uri=sqlite:///{tmp}/runs.db", "progress=false"]
                print("$", " ".join(["python -m runner", *overrides]), flush=True)
                subprocess.run(cmd, check=True, cwd=tmp, stdout=subprocess.DEVNULL)
                runs[key] = run_dir
            shutil.copyfile(runs[key] / plot, out / name)
            print(f"  -> {out / name} ({(out / name).stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
