"""runner/inference/svi/method.py and program.py: every model x guide x loss x optim combination either
fits a few steps (finite losses, right shapes) or is refused before any fit with a ConfigError,
exactly by the rules below; restarts, `select`, replicates (N seeds in one program, the same
numbers as N runs) and the progress display's chunks (no number changes)."""
import itertools
import sys

import numpy as np
import pytest
from conftest import GMM_LOSS, ROOT

from runner.api import compose, fit_config
from runner.experiment import build
from runner.errors import ConfigError

EXAMPLE = ROOT / "examples" / "my_project"

MODELS = ["gmm", "coin", "multimodal", "gaussian2d", "bmm"]
GUIDES = ["autodelta", "autonormal", "automvn", "mixture", "manual"]
LOSSES = ["trace", "traceenum"]
OPTIMS = ["adam", "sgd", "adamw", "adam_cosine", "lbfgs"]
ENUMERATED = {"gmm", "bmm"}
JOINT = {"automvn", "mixture"}  # AutoContinuous guides: NumPyro's TraceEnum breaks on them (KeyError)
HAS_MANUAL = {"gmm", "coin", "multimodal"}
# deterministic objective: every guide site is a point mass (the GMM full guide enumerates the rest)
DETERMINISTIC = {(m, "autodelta") for m in MODELS} | {("gmm", "manual")}
SMALL = ["steps=3", "restarts=2", "data.n=60"]


def expected_error(model, guide, loss, optim):
    if model in ENUMERATED and loss == "trace":
        return "use loss=traceenum"
    if model in ENUMERATED and guide in JOINT:
        return "fail under TraceEnum_ELBO in plated models"
    if guide == "manual" and model not in HAS_MANUAL:
        return "has no manual guide"
    if optim == "lbfgs" and (model, guide) not in DETERMINISTIC:
        return "needs a deterministic objective"
    return None


def overrides(model, guide, loss, optim):
    extra = SMALL if model == "bmm" else SMALL[:2]
    return [f"model={model}", f"guide={guide}", f"loss={loss}", f"optim={optim}", *extra]


COMBOS = list(itertools.product(MODELS, GUIDES, LOSSES, OPTIMS))
VALID = [c for c in COMBOS if expected_error(*c) is None]
INVALID = [c for c in COMBOS if expected_error(*c) is not None]
# make check fits these (every model, guide, loss and optimizer at least once); make test all of VALID
SMOKE = [("gmm", "manual", "traceenum", "lbfgs"), ("coin", "automvn", "trace", "adam_cosine"),
         ("multimodal", "mixture", "trace", "sgd"), ("gaussian2d", "autonormal", "traceenum", "adamw"),
         ("bmm", "autodelta", "traceenum", "adam")]


def test_combination_counts():
    assert len(COMBOS) == 250
    assert len(VALID) == 141 and len(INVALID) == 109
    assert set(SMOKE) <= set(VALID) and [set(x) for x in zip(*SMOKE)] == [set(MODELS), set(GUIDES), set(LOSSES),
                                                                       set(OPTIMS)]


@pytest.mark.parametrize("combo", INVALID, ids=["-".join(c) for c in INVALID])
def test_invalid_combination_refused_before_fit(combo):
    cfg, _ = compose(overrides(*combo))
    with pytest.raises(ConfigError, match=expected_error(*combo)):
        build(cfg)


@pytest.mark.parametrize("combo", [c if c in SMOKE else pytest.param(c, marks=pytest.mark.slow) for c in VALID],
                         ids=["-".join(c) for c in VALID])
def test_valid_combination_fits(combo):
    exp, r = fit_config(overrides(*combo))
    R = 2
    trained = 1 if exp.inference.select == "initial" else R
    assert r.initial_losses.shape == (R,)
    assert r.losses.shape == (trained, 3)
    assert np.isfinite(r.losses).all(), r.losses
    assert set(r.grad_norms) == set(r.params)
    assert all(v.shape == (trained, 3) for v in r.grad_norms.values())
    assert 0 <= r.best < R


# --- restarts and select ---------------------------------------------------------------------------

def test_gmm_select_final_is_no_worse():
    _, r = fit_config(["model=gmm", "guide=autodelta", "select=final"])
    assert r.losses.shape == (100, 200)
    assert r.final_loss <= GMM_LOSS + 1e-3
    assert r.final_loss == pytest.approx(np.nanmin(r.final_losses))
    assert r.best == int(np.nanargmin(r.final_losses))


def test_ten_thousand_restarts():
    _, r = fit_config(["model=gmm", "guide=autodelta", "restarts=10000", "steps=20"])
    assert r.initial_losses.shape == (10000,) and np.isfinite(r.initial_losses).all()
    assert r.initial_losses.min() == pytest.approx(25.1498, abs=0.02)


def test_the_final_loss_tail_and_the_curves_kept_steps():
    """(A long fit's capped curves and its final loss: test_svi_memory.py.)"""
    from runner.inference.svi.program import curve_steps, tail_length

    assert [tail_length(n) for n in (1, 3, 10, 20, 10000)] == [1, 1, 1, 2, 1000]  # the last 10%, at least one
    assert curve_steps(10, None).tolist() == list(range(10)) and curve_steps(10, 10).tolist() == list(range(10))
    assert curve_steps(8, 3).tolist() == [0, 3, 6, 7]  # an even stride, and the last step


def test_grad_norm_of_a_param_and_of_a_pytree_param():
    from runner.inference.svi.program import grad_norm

    assert float(grad_norm(np.array([[3.0, 4.0]]))) == 5.0
    assert float(grad_norm({"w": np.array([1.0, 2.0]), "b": np.array([2.0])})) == 3.0  # a flow's weights


# --- replicates ------------------------------------------------------------------------------------

REPLICATED = ["model=gmm", "guide=autonormal", "steps=30", "restarts=8", "select=final"]


def test_replicates_equal_separate_seeds():
    exp, reps = fit_config([*REPLICATED, "seed=3", "replicates=3"])
    assert len(reps) == 3
    for i, rep in enumerate(reps):
        _, single = fit_config([*REPLICATED, f"seed={3 + i}"])
        np.testing.assert_allclose(rep.losses, single.losses, rtol=1e-5, atol=1e-5)
        assert rep.best == single.best
    # different seeds really differ (a stochastic guide)
    assert not np.allclose(reps[0].losses, reps[1].losses)


def test_replicates_of_a_user_model():
    from runner.api import fit_config

    sys.path.insert(0, str(EXAMPLE))
    try:
        exp, results = fit_config(["model=regression", "guide=autonormal", "steps=300", "restarts=2",
                                   "replicates=3", f"data.path={EXAMPLE / 'regression.csv'}"],
                                  config_dir=EXAMPLE / "conf")
    finally:
        sys.path.remove(str(EXAMPLE))
    assert len(results) == 3
    assert len({float(r.final_loss) for r in results}) == 3  # different seeds, different runs


# --- the progress display's chunks -------------------------------------------------------------------

def test_progress_chunks_change_no_number():
    """The progress line runs the fit in chunks; every number equals the one-call fit's."""
    import io

    import jax

    from runner.api import compose
    from runner.app import configure_jax
    from runner.experiment import build
    from runner.inference.svi.program import fit
    from runner.progress import Progress

    cfg, _ = compose(["model=gmm", "guide=autodelta", "select=final", "restarts=3", "replicates=2", "steps=60"])
    exp = build(cfg)
    configure_jax(exp.cache_dir)
    whole = fit(exp)
    shown = Progress(exp.inference.steps, stream=io.StringIO(), quiet_s=0.0, every_s=0.0)
    shown.chunk_s = 1e-6  # a chunk of a step or two: the most boundaries there can be
    chunked = fit(exp, progress=shown)
    assert shown.updates > 10
    for a, b in zip(whole, chunked):
        for x, y in zip(jax.tree.leaves(a.__dict__), jax.tree.leaves(b.__dict__)):
            np.testing.assert_array_equal(x, y)
    lines = shown.stream.getvalue().splitlines()
    assert len(lines) == shown.updates - 1  # the first chunk (with the compile) is not shown
    best = min(r.losses[:, -1].min() for r in chunked)
    assert lines[-1].startswith("runner: step 60/60  last loss ") and "steps/s" in lines[-1]
    assert float(lines[-1].split()[5]) == pytest.approx(best, rel=1e-5)
