"""runner/identity.py and runner/report.py: a run's readable name, its tags (the choices that act on its method's result,
where it ran, its sweep), the label of a sweep's job, and the lines a person reads at the end.
(What MLflow receives, end to end: tests/e2e/test_cli.py.)"""
from pathlib import Path
from types import SimpleNamespace

import pytest

from runner.api import build, compose
from runner.identity import group_label, model_label, name_of, run_name, run_start, run_tags
from runner.job import Job, SweepJob
from runner.report import summary_line, summary_table

CHOICES = {"model": "gmm", "guide": "autodelta", "loss": "traceenum", "optim": "adam", "data": "gmm1d"}


@pytest.mark.parametrize("choices, label, overrides, name", [
    ({"model": "coin"}, "manual", ["model=coin", "guide=manual", "steps=30", "optim.lr=0.01", "seed=3"],
     "coin-manual-steps30-lr0.01-seed3"),
    # a file by its name; a choice group by its option; where it is logged never
    ({"model": "eight_schools"}, "autonormal",
     ["model=fn", "model.fn=mymodels.eight_schools", "data=json", "data.path=/a/b/eight_schools.json",
      "guide=autonormal", "tracking.uri=sqlite:///x.db", "hydra.run.dir=x", "loss=trace"],
     "eight_schools-autonormal-json-eight_schools-trace"),
    ({"model": "gmm"}, "nuts", ["inference=nuts", "inference.chains=4", "+hints={lr: 0.1}"],
     "gmm-nuts-chains4-hints_lr_0.1_"),  # characters a name should not hold become _
    ({}, "svi", [], "run-svi"),
    # two keys with one last part: each whole (the name said samples100-...-samples50)
    ({"model": "coin"}, "nuts", ["inference=nuts", "inference.samples=100", "inference.chains=2", "posterior.samples=50"],
     "coin-nuts-inference_samples100-chains2-posterior_samples50"),
    # issue 18: a long file name or value is cut in the middle to 24 characters (the name stays readable)
    ({"model": "gmm"}, "autodelta", ["data=file", f"data.path=/{'p' * 120}/{'d' * 86}.csv", "seed=1"],
     "gmm-autodelta-file-ddddddddddd..ddddddddddd-seed1"),
    ({"model": "gmm"}, "autodelta", [f"+note={'n' * 40}"], "gmm-autodelta-notennnnnnnnnnn..nnnnnnnnnnn"),
])
def test_run_name(choices, label, overrides, name):
    assert run_name(choices, label, overrides) == name


def test_run_name_is_capped_at_250_characters():
    assert len(run_name({"model": "gmm"}, "autodelta", [f"k{i}={'v' * 50}" for i in range(10)])) == 250


@pytest.mark.parametrize("job, label", [
    (Job(Path("/r"), {}), ""), (SweepJob(Path("/r"), {}, number=2, count=8), "job 3/8 "),
    (SweepJob(Path("/r"), {}, number=0), "job 1 "), (SweepJob(Path("/r"), {}, number=0, count=None), "job 1 "),
])
def test_job_label(job, label):
    assert job.label == label


def test_tags_are_the_choices_the_method_uses():
    em = build(compose(["model=gmm", "inference=em"])[0])
    job = Job(Path("/runs/1"), {**CHOICES, "inference": "em"}, ("inference=em",))
    tags = run_tags(em, job)
    assert {k: tags[k] for k in ("model", "data", "inference", "run_dir")} == {
        "model": "gmm", "data": "gmm1d", "inference": "em", "run_dir": "/runs/1"}
    assert name_of(em, job) == "gmm-em"
    assert not {"guide", "loss", "optim"} & set(tags)  # EM has no guide, loss or optimizer
    assert tags["config_hash"] == em.config_hash and tags["jax.backend"] == "cpu" and tags["runner.version"]
    assert not [k for k in tags if k.startswith("mlflow")]  # runner's words; the MLflow backend maps them
    svi = build(compose(["model=gmm"])[0])
    job = Job(Path("/runs/2"), {**CHOICES, "inference": "svi"})
    tags = run_tags(svi, job)
    assert {k: tags[k] for k in ("guide", "loss", "optim", "inference")} == {
        "guide": "autodelta", "loss": "traceenum", "optim": "adam", "inference": "svi"}
    assert name_of(svi, job) == "gmm-autodelta"


def test_a_sweeps_job_is_tagged_with_its_overrides_group_and_parent():
    exp = build(compose(["model=gmm", "seed=2"])[0])
    overrides = ("model=gmm", "seed=2", "tracking.uri=x")
    job = SweepJob(Path("/s/1"), {**CHOICES, "inference": "svi"}, overrides, number=1, count=4, parent="P",
                   group=group_label(overrides))
    tags = run_tags(exp, job)
    assert {k: tags[k] for k in ("overrides", "config_group")} == {
        "overrides": "model=gmm seed=2 tracking.uri=x", "config_group": "model=gmm"}
    assert tags["seed"] == 2  # the seed, so runs group by config_group and tell their seeds apart
    start = run_start(exp, job)
    assert (start.name, start.parent_id, start.yield_to_finished) == ("gmm-autodelta-seed2", "P", True)
    rerun = SweepJob(Path("/s/1"), {}, number=1, rerun=True)
    assert run_start(exp, rerun).yield_to_finished is False and run_start(exp, Job(Path("/r"), {})).yield_to_finished is None


def test_a_function_model_is_named_by_its_function():
    exp = SimpleNamespace(model=SimpleNamespace(name="eight_schools"))
    assert model_label(exp, {"model": "fn"}) == "eight_schools" and model_label(exp, {}) == "eight_schools"
    assert model_label(exp, {"model": "gmm"}) == "gmm"


def test_the_summary_line_and_table():
    exp = build(compose(["model=gmm"])[0])
    out = SimpleNamespace(line="final_loss=17.4433 best_restart=3/100")
    record = SimpleNamespace(scalars={"final_loss": 17.44331, "best_restart": 3.0}, tags={})
    choices = {**CHOICES, "inference": "svi"}
    assert summary_line(exp, SweepJob(Path("/r"), choices, number=1, count=4), out, "abc") == (
        "runner: job 2/4 gmm/autodelta final_loss=17.4433 best_restart=3/100 run_id=abc")
    single = Job(Path("/r"), choices)
    assert summary_line(exp, single, out, None) == (
        "runner: gmm/autodelta final_loss=17.4433 best_restart=3/100 outputs=/r")
    record.name = "gmm-autodelta"
    assert summary_table(exp, single, record, "abc", "mlflow ui").splitlines() == [
        "  run           gmm-autodelta  (abc)",
        "  choices       model=gmm guide=autodelta loss=traceenum optim=adam data=gmm1d inference=svi",
        "  final_loss    17.4433",
        "  best_restart  3 of 100",
        "  outputs       /r",
        "  look          mlflow ui"]
