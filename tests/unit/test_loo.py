"""runner/loo.py in-process, on real runs' inference_data.nc: arviz.compare's ranking and numbers
(a point estimate's elpd is its log-likelihood at the MAP, p_loo 0, every Pareto k flagged), runs on
different data refused in one line, a sweep's table from its jobs' run directories with labels
that keep only what differs, and `runner.compare --loo` without a sweep refused (exit 2). (Against
real sweeps and a real store: tests/e2e/test_sweep.py.)"""
import json
import math
import shutil

import pytest
from conftest import run_recorded

from runner import loo
from runner.errors import ConfigError
from runner.inference_data import FILE

pytestmark = pytest.mark.usefixtures("xla_cache")


@pytest.fixture(scope="module")
def coin_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("coin")
    out = {}
    for guide in ("manual", "autodelta"):
        _, o = run_recorded(tmp / guide, "model=coin", f"guide={guide}")
        out[guide] = (o.run_dir / FILE, o.final_loss)
    _, o = run_recorded(tmp / "gmm", "model=gmm", "steps=20", "restarts=2")
    out["gmm"] = (o.run_dir / FILE, o.final_loss)
    return out


def test_compare_ranks_as_arviz_and_flags_the_point_estimate(coin_runs):
    rows = loo.compare([{"label": g, "path": coin_runs[g][0], "run_id": g, "final_loss": coin_runs[g][1]}
                        for g in ("manual", "autodelta")])
    assert [r["run"] for r in rows] == ["autodelta", "manual"] and [r["rank"] for r in rows] == [0, 1]
    point, beta = rows
    # the MAP of 12 heads in 20 is 0.6: its plug-in elpd is 12 log 0.6 + 8 log 0.4
    assert point["elpd_loo"] == pytest.approx(12 * math.log(0.6) + 8 * math.log(0.4), abs=1e-3)
    assert point["p_loo"] == pytest.approx(0, abs=1e-4) and point["pareto_k_bad"] == "20/20"
    assert beta["elpd_loo"] == pytest.approx(12 * math.log(12 / 21) + 8 * math.log(8 / 21), abs=0.1)
    assert beta["pareto_k_bad"] == "0/20"
    assert beta["elpd_diff"] == pytest.approx(point["elpd_loo"] - beta["elpd_loo"], abs=1e-6)
    text = loo.render(rows)
    assert text.splitlines()[0].split() == list(loo.COLUMNS)
    assert text.splitlines()[-1].startswith("note: 1 of 2 runs have observations with Pareto k above")


def test_runs_on_different_data_are_refused(coin_runs):
    runs = [{"label": g, "path": coin_runs[g][0], "run_id": g} for g in ("manual", "gmm")]
    with pytest.raises(ConfigError, match="the runs are on 2 different data sets: LOO compares runs on the same data"):
        loo.compare(runs)
    with pytest.raises(ConfigError, match="--loo needs at least 2 runs"):
        loo.compare(runs[:1])


def test_a_sweeps_table_from_its_run_directories(coin_runs, tmp_path):
    for i, guide in enumerate(("manual", "autodelta")):
        job = tmp_path / str(i)
        job.mkdir()
        shutil.copy(coin_runs[guide][0], job / FILE)
        (job / "runner_status.json").write_text(json.dumps(
            {"status": "run", "run_id": None, "config_group": f"guide={guide} model=coin", "final_loss": coin_runs[guide][1]}))
    (tmp_path / "2").mkdir()  # a failed job: left out
    (tmp_path / "2" / "runner_status.json").write_text(json.dumps({"status": "failed"}))
    rows = loo.sweep_table(tmp_path, "runner_status.json")
    assert [r["run"] for r in rows] == ["guide=autodelta", "guide=manual"]  # model=coin: common to all
    assert loo.write(rows, tmp_path / "sweep") == ["loo.json", "loo.txt"]
    assert json.loads((tmp_path / "sweep" / "loo.json").read_text()) == rows


def test_compare_loo_needs_a_sweep(capsys):
    from runner.compare import main

    assert main(["--loo"]) == 2
    assert capsys.readouterr().err.strip() == (
        "runner.compare: error: --loo needs --sweep <parent run id> (LOO compares runs on the same data)")


def _nan_loglik(src, dst):
    """A valid InferenceData whose log-likelihood is all NaN."""
    import arviz as az

    idata = az.from_netcdf(str(src))
    for name in idata.log_likelihood.data_vars:
        idata.log_likelihood[name].values[...] = float("nan")
    idata.to_netcdf(str(dst))


def _no_loglik(src, dst):
    import arviz as az

    idata = az.from_netcdf(str(src))
    del idata.log_likelihood
    idata.to_netcdf(str(dst))


@pytest.mark.parametrize("make, message", [
    (lambda src, dst: dst.write_bytes(__import__("pickle").dumps({"a": 1})), "is not a netCDF file (it starts"),
    (lambda src, dst: dst.write_text("not a netCDF file at all\n"), "is not a netCDF file"),
    (lambda src, dst: dst.write_bytes(bytes(8 << 20)), "is not a netCDF file (it starts b'\\x00"),
    (lambda src, dst: dst.write_bytes(src.read_bytes()[:4096]), "cannot be read as ArviZ InferenceData"),
    (_no_loglik, "has no log_likelihood group"),
    (_nan_loglik, "log-likelihood 'obs' is NaN or inf at 20000 of 20000 values"),
])
def test_a_file_read_back_is_checked_before_it_is_ranked(coin_runs, tmp_path, make, message):
    """inference_data.nc read back from a store is untrusted data: a pickle, text, zeros, a cut
    file, no log-likelihood or a NaN one is one ConfigError line naming the run (issue 28: a
    41-line traceback, or a NaN elpd ranked with weight 0.5)."""
    bad = tmp_path / FILE
    make(coin_runs["manual"][0], bad)
    runs = [{"label": "good", "path": coin_runs["autodelta"][0], "run_id": "good"},
            {"label": "bad", "path": bad, "run_id": "r0bad"}]
    with pytest.raises(ConfigError) as e:
        loo.compare(runs)
    assert str(e.value).startswith(f"run r0bad: {FILE}") and message in str(e.value), str(e.value)
    assert len(str(e.value).splitlines()) == 1
