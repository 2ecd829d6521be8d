"""runner/sweep.py's helpers: which overrides change a result, a job's configuration label (its seed
left out), the config hash that says a job has already run (the contents of the files it names
count; where it is logged does not), and how many jobs Hydra's sweeper makes. (The aggregate:
test_sweep_aggregate.py; real multiruns: tests/e2e/test_sweep.py.)"""
import pytest

from runner.api import compose
from runner.identity import config_hash, group_label, named_files, result_overrides
from runner.job import read_sweep
from runner.sweep import count_jobs


def test_result_overrides_leave_out_where_a_run_is_logged_or_cached():
    overrides = ["model=gmm", "tracking.uri=sqlite:///x.db", "tracking=none", "+tracking.extra=1", "jax.cache_dir=null",
                 "rerun=true", "progress=false", "hydra.sweep.dir=s", "hydra/launcher=joblib", "seed=3",
                 "optim.lr=0.1", "~hints", "trackingx=1"]
    assert result_overrides(overrides) == ["model=gmm", "seed=3", "optim.lr=0.1", "~hints", "trackingx=1"]


@pytest.mark.parametrize("overrides, label", [
    (["seed=1", "model=gmm", "guide=autonormal", "tracking.uri=sqlite:///x.db"], "guide=autonormal model=gmm"),
    (["guide=autonormal", "model=gmm", "seed=2"], "guide=autonormal model=gmm"),  # the seeds of one configuration
    (["+seed=4", "optim.lr=0.1"], "optim.lr=0.1"),
    (["seed=0", "progress=false"], "(defaults)"),
])
def test_group_label_is_the_configuration_without_its_seed(overrides, label):
    assert group_label(overrides) == label


def test_config_hash_follows_the_data_files_contents_not_where_runs_are_logged(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("0.0\n1.0\n10.0\n")

    def hashed(*extra):
        return config_hash(compose(["data=file", f"data.path={data}", *extra])[0])

    first = hashed()
    assert first == hashed() and len(first) == 16
    assert hashed("tracking.uri=sqlite:///elsewhere.db", "tracking.experiment=other", "jax.cache_dir=null",
                  "progress=false", "rerun=true") == first  # where it is logged changes no result
    assert hashed("seed=1") != first
    data.write_text("0.0\n1.0\n10.5\n")  # the same path, another data set
    assert hashed() != first


def test_named_files_are_the_data_file_and_a_functions_source(tmp_path, monkeypatch):
    (tmp_path / "d.csv").write_text("1\n")
    (tmp_path / "mine_for_hash.py").write_text("def f(x):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = named_files({"data": {"path": str(tmp_path / "d.csv")}, "model": {"fn": "mine_for_hash.f"}})
    assert found == {"data.path": tmp_path / "d.csv", "model.fn": tmp_path / "mine_for_hash.py"}
    assert named_files({"data": {"path": str(tmp_path / "missing.csv")}, "model": {"fn": "nosuch_module.f"}}) == {}


@pytest.mark.parametrize("overrides, jobs", [
    (["model=gmm", "guide=autodelta,autonormal", "seed=0,1,2"], 6),
    (["seed=range(4)", "optim.lr=0.1"], 4),
    (["model=coin"], 1),
    (["seed=0,1", "guide="], 2),
    (["seed=[0,"], None),  # does not parse
])
def test_count_jobs_as_hydras_basic_sweeper(overrides, jobs):
    assert count_jobs(overrides) == jobs


def test_read_sweep_is_none_before_the_sweep_starts(tmp_path):
    assert read_sweep(tmp_path) is None
    (tmp_path / "sweep.json").write_text('{"parent_run_id": "p", "jobs": 4}')
    assert read_sweep(tmp_path) == {"parent_run_id": "p", "jobs": 4}
