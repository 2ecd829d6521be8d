"""The files a run promises are always there, whatever records it: every method with `tracking=none`
and with MLflow leaves the same run directory, file for file, its figures included, and says no
warning (a figure skipped because two threads imported pyplot at once was one)."""
import pytest
from conftest import run_cli

CASES = {  # method: (its overrides, the run directory's files besides .hydra/ and dotfiles)
    "svi": (["model=coin", "steps=200"],
            {"config.yaml", "diagnostics.json", "inference_data.nc", "latents.json", "metrics.json",
             "model_source/coin.py", "params.json", "plots/coin.png", "plots/loss.png", "runner.log", "sites.json",
             "summary.json"}),
    "nuts": (["model=coin", "inference=nuts", "inference.warmup=50", "inference.samples=50"],
             {"config.yaml", "inference_data.nc", "latents.json", "metrics.json", "model_source/coin.py",
              "plots/coin.png", "plots/trace.png", "posterior.npz", "runner.log", "sites.json", "summary.json"}),
    "em": (["model=gmm", "data=digits", "model.K=3", "inference=em", "inference.iterations=5"],
           {"assignments.json", "config.yaml", "inference_data.nc", "metrics.json", "model_source/gmm.py",
            "params.json", "plots/components.png", "plots/loglik.png", "runner.log", "sites.json"}),
}


def files(run_dir):
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(run_dir).parts)}


@pytest.mark.parametrize("method", sorted(CASES))
def test_every_method_leaves_its_whole_run_directory_with_and_without_a_store(tmp_path, method):
    args, expected = CASES[method]
    for tracking in ("tracking=none", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"):
        run_dir = tmp_path / tracking.split("=")[0]
        proc = run_cli([*args, tracking, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "warning" not in proc.stderr.lower(), proc.stderr[-3000:]
        assert files(run_dir) == expected, (tracking, files(run_dir) ^ expected)
        assert all((run_dir / f).stat().st_size > 0 for f in expected if f.startswith("plots/"))
