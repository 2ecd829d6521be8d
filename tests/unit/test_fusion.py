"""runner/fusion.py and runner/inference/svi/fused.py in-process: which jobs fuse, the fused
program's numbers against each job fitted alone, successive halving's rungs and choices, and the
memory budget splitting a group. (The launcher end to end: tests/e2e/test_fused.py.)"""
import numpy as np
import pytest
from omegaconf import OmegaConf

from runner import fusion
from runner.api import build, compose
from runner.inference.svi import fused
from runner.inference.svi.method import fused_outputs

GMM = ["model=gmm", "steps=30", "restarts=2", "tracking=none"]


def cfg(*overrides):
    return compose([*GMM, *overrides])[0]


def groups_of(*jobs):
    return [g.jobs for g in fusion.plan([cfg(*j) for j in jobs])]


def test_jobs_fuse_when_only_seeds_optimizer_floats_stopping_and_after_fit_settings_differ():
    jobs = [("seed=0",), ("seed=1", "optim.lr=0.3"), ("optim.b1=0.5",), ("tracking=mlflow", "tracking.uri=sqlite:///x.db"),
            ("posterior.samples=10", "progress=false"), ("stop.rtol=1e-3",), ("stop.rtol=1e-4", "stop.patience=7"),
            ("model.prior_loc_scale=3.0",)]
    assert groups_of(*jobs) == [[0, 1, 2, 3, 4, 7], [5, 6]]  # early stopping on or off is another program
    plan = fusion.plan([cfg(*j) for j in jobs])
    assert plan[0].varies == ["model.prior_loc_scale", "optim.b1", "optim.lr", "seed"] and plan[0].alone is None
    assert plan[1].varies == ["stop.patience", "stop.rtol"]


@pytest.mark.parametrize("other", [("guide=autonormal",), ("steps=31",), ("restarts=5",), ("optim=sgd",),
                                   ("model.K=3",), ("loss=trace",), ("tracking.max_points_per_curve=10",),
                                   ("optim=adam_cosine",), ("select=final",)])
def test_anything_that_changes_the_program_is_another_group(other):
    assert groups_of((), ("seed=1",), other) == [[0, 1], [2]]


def test_an_integer_of_the_optimizer_and_a_method_without_fusion_run_one_by_one():
    plan = fusion.plan([cfg("optim=adam_cosine", "optim.schedule.decay_steps=10"),
                        cfg("optim=adam_cosine", "optim.schedule.decay_steps=20")])
    assert [g.alone for g in plan] == ["nothing to fuse it with"] * 2
    plan = fusion.plan([cfg("inference=nuts", "seed=0"), cfg("inference=nuts", "seed=1")])
    assert [(g.jobs, g.alone) for g in plan] == [([0, 1], "inference=nuts fits one experiment at a time")]


def test_the_launcher_says_how_it_grouped_the_jobs():
    overrides = [["guide=autodelta", "optim.lr=0.1"], ["guide=autodelta", "optim.lr=0.3"], ["guide=autonormal", "optim.lr=0.1"]]
    plan = fusion.plan([cfg(*o) for o in overrides])
    assert fusion.describe(plan, overrides) == [
        "runner: vectorized launcher: 3 jobs: 2 in 1 fused program(s), 1 one by one",
        "runner:   group 1: 2 jobs fused (guide=autodelta; varying optim.lr)",
        "runner:   group 2: 1 job(s) one by one (guide=autonormal optim.lr=0.1): nothing to fuse it with"]


def test_jobs_that_finished_before_are_in_no_group_and_counted_apart():
    overrides = [["guide=autodelta", "optim.lr=0.1"], ["guide=autodelta", "optim.lr=0.3"], ["guide=autodelta", "optim.lr=1.0"],
                 ["guide=autonormal", "optim.lr=0.1"]]
    plan = fusion.plan([cfg(*o) for o in overrides], skip=frozenset({1, 3}))
    assert [g.jobs for g in plan] == [[0, 2]]
    assert fusion.describe(plan, overrides, finished=2) == [
        "runner: vectorized launcher: 4 jobs: 2 in 1 fused program(s), 0 one by one, 2 FINISHED before (skipped)",
        "runner:   group 1: 2 jobs fused (guide=autodelta; varying optim.lr)"]
    assert fusion.describe(fusion.plan([cfg(*o) for o in overrides], skip=frozenset(range(4))), overrides, 4) == [
        "runner: vectorized launcher: 4 jobs: 0 in 0 fused program(s), 0 one by one, 4 FINISHED before (skipped)"]


def test_finished_before_reads_the_parents_children_once_and_skips_what_finished(tmp_path):
    """The launcher's look-up against a real sqlite store: a sweep folder whose parent has one FINISHED
    child of the first config (its config hash) and a FAILED one of the second."""
    import json

    from runner.identity import config_hash
    from runner.tracking.mlflow.store import read_client

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfgs = [cfg("tracking=mlflow", f"tracking.uri={uri}", f"optim.lr={lr}") for lr in (0.1, 0.3, 1.0)]
    client = read_client(uri)
    exp = client.create_experiment("runner")
    parent = client.create_run(exp).info.run_id
    for c, status in ((cfgs[0], "FINISHED"), (cfgs[1], "FAILED")):
        run = client.create_run(exp, tags={"mlflow.parentRunId": parent, "config_hash": config_hash(c)}).info.run_id
        client.set_terminated(run, status)
    assert fusion.finished_before(cfgs, tmp_path) == frozenset()  # no sweep file: no parent to ask
    (tmp_path / "sweep.json").write_text(json.dumps({"parent_run_id": parent, "reused": True, "jobs": 3}))
    assert fusion.finished_before(cfgs, tmp_path) == frozenset({0})
    rerun = [cfg("tracking=mlflow", f"tracking.uri={uri}", "optim.lr=0.1", "rerun=true")]
    assert fusion.finished_before(rerun, tmp_path) == frozenset()  # rerun=true runs it again


def fit_alone(exp):
    from runner.inference import FitContext

    return exp.inference.fit(exp, FitContext())


@pytest.mark.parametrize("extra", [pytest.param(("guide=autonormal", "select=final"), marks=pytest.mark.slow),
                                   pytest.param(("optim=adam_cosine", "optim.schedule.alpha=0.1,0.5"), marks=pytest.mark.slow),
                                   pytest.param(("guide=autonormal", "select=final", "stop.rtol=0.001,0.01", "stop.window=5",
                                                 "stop.patience=5"), marks=pytest.mark.slow),
                                   ("guide=autonormal", "select=final", "model.prior_loc_scale=0.5,10.0")])
def test_fused_jobs_have_the_numbers_of_each_job_fitted_alone(extra):
    """Per job: final loss, every restart's final loss and the curves, to 1e-6 relative (measured:
    equal bit for bit here); learning rates, a schedule's alpha and early stopping per row."""
    fixed = [e for e in extra if "," not in e]
    swept = [e for e in extra if "," in e] or ["optim.lr=0.03,0.1"]
    key, values = swept[0].split("=")
    cfgs = [cfg(*fixed, f"{key}={v}", f"seed={s}") for v in values.split(",") for s in (0, 1)]
    plan = fusion.plan(cfgs)
    assert [g.jobs for g in plan] == [[0, 1, 2, 3]]
    exps = [build(c) for c in cfgs]
    varying = {k[len("optim."):]: [float(n[k]) for n in plan[0].numbers] for k in plan[0].varies if k.startswith("optim.")}
    model = [k for k in plan[0].varies if k.startswith("model.")]
    per_job, _ = fused.fit(exps, fusion.Plan(varying, OmegaConf.to_container(cfgs[0].optim, resolve=True), model=model))
    outs = fused_outputs(exps, per_job, None)
    assert len({round(o.scalars["final_loss"], 6) for o in outs}) > 1
    for exp, out, results in zip(exps, outs, per_job):
        alone = fit_alone(exp)
        assert out.scalars["final_loss"] == pytest.approx(alone.scalars["final_loss"], rel=1e-6)
        np.testing.assert_allclose(results[0].final_losses, alone.extras.results[0].final_losses, rtol=1e-6)
        np.testing.assert_allclose(out.curves["loss"], alone.curves["loss"], rtol=1e-6)
        assert out.line == alone.line


def test_halving_rungs_and_the_jobs_it_stops():
    assert fused.rungs(400, 0.125, 0.5) == (50, 100, 200)
    assert fused.rungs(1000, 0.1, 1 / 3) == (100, 300, 900)
    assert fused.rungs(10, 0.01, 0.5) == (1, 2, 4, 8)
    from runner.inference.svi.state import FitState, StopState, Tail

    def state(last, stop_at):
        n = len(last)
        z = np.zeros(n, np.float32)
        return FitState({}, None, None, Tail(z, z, np.asarray(last, np.float32), z), np.zeros(n, np.int32),
                        StopState(np.asarray(stop_at, np.int32), z, z, np.zeros(n, np.int32), z, z))

    # 4 jobs of 2 rows; job scores = min over their rows: 3, 1, NaN (worst), 2
    halving = fused.Halving((50, 100), 0.5, jobs=4, rows=2, steps=400, deterministic=True)
    s = halving(state([3, 5, 1, 9, np.nan, np.nan, 4, 2], [400] * 8), 50)
    assert halving.pruned_at.tolist() == [50, 400, 50, 400]
    assert np.asarray(s.stop.stop_at).tolist() == [50, 50, 400, 400, 50, 50, 400, 400]
    s = halving(s._replace(tail=s.tail._replace(last=np.asarray([0, 0, 7, 7, 0, 0, 1, 1], np.float32))), 100)
    assert halving.pruned_at.tolist() == [50, 100, 50, 400]  # the pruned ones are not ranked again
    assert halving.steps_saved == 350 + 300 + 350


@pytest.mark.slow  # four programs compiled (13 s); tests/unit/test_budget.py checks the budget in make check
def test_a_group_over_the_memory_budget_is_split_into_parts_that_fit(capsys):
    """Nothing is allocated before the split: the programs are compiled for their shapes only."""
    import jax
    import jax.numpy as jnp

    from runner.inference.budget import needed_bytes
    from runner.inference.svi import program
    from runner.inference.svi.loop import compile_fit

    cfgs = [cfg("restarts=400", f"seed={s}") for s in range(4)]
    plan = fusion.plan(cfgs)
    built = [(i, c and str(i), build(c)) for i, c in enumerate(cfgs)]

    def need(n):
        exps = [e for _, _, e in built[:n]]
        programs = program.make_programs(exps[0], fused.rows_of(exps, {}, {}, False, None))
        roots = jnp.stack([jax.random.PRNGKey(e.seed) for e in exps])
        return needed_bytes(compile_fit(programs, roots, jax.tree.map(jnp.asarray, exps[0].data))[1])

    two, four = need(2), need(4)
    assert four > two
    from runner.inference.budget import SHARE

    outs = fusion.split_fit(built, plan[0], fusion.Plan({}, None, available=int((two + four) / 2 / SHARE)))
    assert len(outs) == 4 and all(o is not None for o in outs)
    assert "split into 2 + 2 jobs" in capsys.readouterr().err
    alone = fit_alone(built[3][2])
    assert outs[3].scalars["final_loss"] == pytest.approx(alone.scalars["final_loss"], rel=1e-6)
    # not even one job fits: each is left to its own run, which refuses it in one line
    assert fusion.split_fit(built, plan[0], fusion.Plan({}, None, available=1000)) == [None] * 4
