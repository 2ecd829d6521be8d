"""runner/inference/diagnostics.py: did the fit work? Each diagnostic against a known answer.

- PSIS k-hat (Yao et al. 2018): seed 004's coin Beta guide is the posterior's own family (Beta(13, 9)),
  so the importance weights are nearly constant (k-hat low); a mean-field Normal guide cannot
  follow the 45-degree correlation of gaussian2d (k-hat high), AutoMultivariateNormal can (low).
- Restart agreement: the multimodal model has two modes of equal loss, so mean-field restarts
  agree in loss and disagree in their draws (R-hat >> 1); seed 004's MixtureGeneral guide covers
  both (one answer); the GMM tutorial's 100 restarts trained to the end find several optima.
- Early stopping: a masked update inside one while_loop; off by default (the seeds' numbers do
  not move), the same numbers in chunks as in one call, bad settings refused before any fit.
"""
import numpy as np
import pytest

from runner.api import fit_config
from runner.errors import ConfigError
from runner.inference import diagnostics


def khat_of(overrides):
    exp, r = fit_config([*overrides, "progress=false"])
    metrics, tags = diagnostics.psis(r)
    return metrics, tags


# --- k-hat ----------------------------------------------------------------------------------------

def test_khat_of_pareto_weights_is_their_tail_shape():
    """Weights w = U^-k (a Pareto tail of shape k): the fit recovers k within about two standard
    errors ((1 + k) / sqrt(M) for the M = 3 sqrt(S) = 949 tail draws of S = 100000: 0.04-0.06)."""
    rng = np.random.default_rng(0)
    for k in (0.3, 0.8):
        lw = -k * np.log(rng.uniform(size=100000))
        assert diagnostics.psis_khat(lw) == pytest.approx(k, abs=0.1)
    assert np.isnan(diagnostics.psis_khat(np.array([0.0, np.nan, 1.0])))


def test_khat_verdicts_use_the_papers_thresholds():
    assert [diagnostics.khat_verdict(k) for k in (-1.5, 0.49, 0.5, 0.69, 0.7, np.inf, np.nan)] == [
        "good", "good", "usable", "usable", "do not trust", "do not trust", "unknown"]


def test_coin_beta_guide_is_the_exact_family_khat_low():
    metrics, tags = khat_of(["model=coin", "guide=manual"])
    assert metrics["psis_draws"] == 1000
    assert metrics["psis_khat"] < 0.5 and tags == {"psis_verdict": "good"}
    assert metrics["psis_khat"] == pytest.approx(-1.526, abs=1e-3)  # README "Did it work?"


def test_gaussian2d_mean_field_guide_khat_high_full_rank_low():
    metrics, tags = khat_of(["model=gaussian2d", "guide=autonormal"])
    assert metrics["psis_khat"] > 0.7 and tags == {"psis_verdict": "do not trust"}
    metrics, tags = khat_of(["model=gaussian2d", "guide=automvn"])
    assert metrics["psis_khat"] < 0.5 and tags == {"psis_verdict": "good"}


def test_no_khat_for_point_masses_or_enumerated_models():
    for overrides in (["model=coin", "guide=autodelta", "steps=10"],  # a point mass: no density to weigh
                      ["model=gmm", "guide=autonormal", "steps=10", "restarts=2"]):  # enumerated assignments
        exp, r = fit_config(overrides)
        assert not exp.inference.continuous and r.log_weights is None and diagnostics.psis(r) == ({}, {})
    exp, r = fit_config(["model=coin", "guide=manual", "steps=10", "diagnostics.psis_draws=0"])
    assert r.log_weights is None


def test_psis_draws_refused_when_too_few():
    for bad in ("3", "abc", "1e3"):
        with pytest.raises(ConfigError, match="diagnostics.psis_draws must be 0 .off. or an integer >= 10, got "):
            fit_config(["model=coin", "guide=manual", f"diagnostics.psis_draws={bad}"])


# --- restart agreement ------------------------------------------------------------------------------

def agreement_of(overrides):
    from runner import posterior

    exp, r = fit_config([*overrides, "progress=false"])
    return diagnostics.agreement(r, posterior.latent_sites(exp.model, exp.data))


def test_multimodal_mean_field_restarts_agree_in_loss_not_in_draws():
    metrics, tags = agreement_of(["model=multimodal", "guide=autonormal", "restarts=4"])
    assert metrics["restart_loss_spread"] < 2  # the two modes have the same loss...
    assert metrics["restart_rhat"] > 2  # ...and the restarts sit in different ones
    assert tags == {"restart_agreement": "several modes"}


def test_multimodal_mixture_guide_restarts_find_one_answer():
    metrics, tags = agreement_of(["model=multimodal", "guide=manual", "restarts=4"])
    assert metrics["restart_rhat"] < 1.1 and metrics["restart_loss_spread"] < 2
    assert tags == {"restart_agreement": "one answer"}


def test_gmm_tutorial_restarts_trained_to_the_end_find_several_optima():
    metrics, tags = agreement_of(["model=gmm", "guide=autodelta", "select=final"])
    assert tags == {"restart_agreement": "several modes"}
    assert metrics["restart_loss_spread"] > 2 and "restart_rhat" not in metrics  # point masses: no draws to compare
    assert metrics["restarts_compared"] == 4 and 3 <= metrics["restarts_at_best"] < 100


def test_no_agreement_for_one_restart_or_select_initial():
    assert agreement_of(["model=coin", "guide=manual", "steps=10"]) == ({}, {})
    assert agreement_of(["model=gmm", "guide=autodelta", "steps=10"]) == ({}, {})  # select=initial trains one


# --- early stopping ---------------------------------------------------------------------------------

def test_early_stopping_is_off_by_default_and_changes_nothing():
    exp, r = fit_config(["model=gmm", "guide=autodelta"])
    assert exp.inference.stop is None and r.stopped is None
    assert r.final_loss == pytest.approx(17.4433, abs=1e-4)


@pytest.mark.parametrize("override, message", [
    ("stop.rtol=-1", "stop.rtol must be a number >= 0 (or null: no early stopping), got -1"),
    ("stop.rtol=abc", "stop.rtol must be a number >= 0"),
    ("stop.patience=0", "stop.patience must be a positive integer, got 0"),
    ("stop.window=1.5", "stop.window must be a positive integer, got 1.5"),
])
def test_bad_stop_settings_refused(override, message):
    extra = [] if override.startswith("stop.rtol") else ["stop.rtol=1e-4"]
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fit_config(["model=coin", "guide=manual", override, *extra])


def test_lbfgs_with_early_stopping_refused():
    with pytest.raises(ConfigError, match="stop.rtol applies to the step optimizers"):
        fit_config(["model=gmm", "optim=lbfgs", "steps=5", "stop.rtol=1e-4"])


def test_each_restart_stops_by_itself_and_keeps_its_answer():
    """GMM, 8 restarts trained to the end, deterministic objective: each restart stops at its own
    step; a stopped restart's params are frozen, so its final loss is the full fit's to within the
    jitter Adam at lr 0.1 keeps up to the last step (up to 2.6e-3 on a loss of 17.44)."""
    base = ["model=gmm", "guide=autodelta", "select=final", "restarts=8", "steps=3000", "progress=false"]
    _, full = fit_config(base)
    exp, r = fit_config([*base, "stop.rtol=1e-6", "stop.patience=100", "stop.window=10"])
    assert (r.stopped < 3000).all() and len(set(r.stopped.tolist())) > 1
    np.testing.assert_allclose(r.final_losses, full.final_losses, rtol=2e-4)
    assert r.steps[-1] < r.stopped.max()  # the curves end where the last restart stopped
    metrics, tags, words = diagnostics.stopping(r, 3000)
    assert tags == {"converged": "yes"} and words == f"stopped={r.stopped[r.best_row]}/3000"
    assert metrics["restarts_converged"] == 8


def test_a_fit_that_hits_steps_says_so():
    exp, r = fit_config(["model=gmm", "guide=autodelta", "stop.rtol=1e-4", "progress=false"])
    assert (r.stopped == 200).all()  # still improving by more than 1e-4 at step 200
    metrics, tags, words = diagnostics.stopping(r, 200)
    assert tags == {"converged": "no"} and words == "not_converged=1/1 (hit steps=200)"
    assert r.final_loss == pytest.approx(17.4433, abs=1e-4)  # unstopped: the same numbers


def test_early_stopping_in_chunks_changes_no_number():
    import io

    import jax

    from runner.api import compose
    from runner.app import configure_jax
    from runner.experiment import build
    from runner.inference.svi.program import fit
    from runner.progress import Progress

    cfg, _ = compose(["model=gmm", "guide=autodelta", "select=final", "restarts=3", "steps=2000",
                      "stop.rtol=1e-6", "stop.patience=50", "stop.window=10"])
    exp = build(cfg)
    configure_jax(exp.cache_dir)
    whole = fit(exp)
    shown = Progress(exp.inference.steps, stream=io.StringIO(), quiet_s=0.0, every_s=0.0)
    shown.chunk_s = 1e-6
    chunked = fit(exp, progress=shown)
    assert (whole[0].stopped < 2000).all()
    for a, b in zip(whole, chunked):
        for x, y in zip(jax.tree.leaves(a.__dict__), jax.tree.leaves(b.__dict__)):
            np.testing.assert_array_equal(x, y)


def test_summary_table_rows_say_each_verdict():
    from runner.report import diagnostic_rows

    s = {"psis_khat": 0.857, "psis_draws": 1000, "restarts_compared": 4, "restart_loss_spread": 0.212,
         "restart_rhat": 5.02, "restarts_at_best": 4, "restarts_finite": 4, "stop_step": 200, "restarts_converged": 0}
    tags = {"psis_verdict": "do not trust", "restart_agreement": "several modes", "converged": "no"}
    assert diagnostic_rows(s, tags) == [
        ("psis_khat", "0.857 (do not trust; 1000 draws)"),
        ("restarts", "several modes (best 4: losses within 0.212 noise sd of the best, R-hat 5.02; 4 of 4 at the best loss)"),
        ("stopped", "not converged: 0 restarts stopped before the last step")]
    assert diagnostic_rows({"final_loss": 1.0}, {}) == []  # EM, NUTS, point-mass guides: nothing to add


# --- checkpoint, resume and the safe point (the program level) -------------------------------------------

@pytest.mark.parametrize("extra", [pytest.param(["guide=autonormal"], marks=pytest.mark.slow),
                                   ["guide=autodelta", "stop.rtol=1e-6", "stop.patience=50", "stop.window=10"]])
def test_a_fit_interrupted_and_resumed_from_its_checkpoint_gives_the_same_numbers(tmp_path, extra):
    """The carry is written between chunks; a fit killed half way and resumed from the file ends
    with every number equal, bit for bit, to the fit that was never interrupted (CPU)."""
    import jax

    from runner.api import compose
    from runner.app import configure_jax
    from runner.experiment import build
    from runner.inference.svi.loop import Checkpoint
    from runner.inference.svi.program import fit

    cfg, _ = compose(["model=gmm", "select=final", "restarts=3", "replicates=2", "steps=1500", *extra])
    exp = build(cfg)
    configure_jax(exp.cache_dir)
    whole = fit(exp)
    end = max(int(r.stopped.max()) for r in whole) if whole[0].stopped is not None else 1500
    half = end // 2  # with early stopping: before the last restart stops, after some have

    class Interrupt:  # a progress display that is Ctrl-C'd half way
        chunk_s = 1e-6
        steps_seen = []

        def update(self, step, best):
            self.steps_seen.append(step)
            if step >= half:
                raise KeyboardInterrupt

        def close(self):
            pass

    path = tmp_path / "checkpoint.npz"
    with pytest.raises(KeyboardInterrupt):
        fit(exp, progress=Interrupt(), checkpoint=Checkpoint(path, every_s=0.0))
    with np.load(path) as f:
        assert half <= int(f["step"]) < end
    resumed = fit(exp, checkpoint=Checkpoint(path, every_s=0.0, resume=True))
    for a, b in zip(whole, resumed):
        for x, y in zip(jax.tree.leaves(a.__dict__), jax.tree.leaves(b.__dict__)):
            np.testing.assert_array_equal(x, y)
    with np.load(path) as f:
        assert int(f["step"]) >= end  # written at the last chunk


def test_resume_refuses_a_checkpoint_of_another_fit(tmp_path):
    from runner.api import compose
    from runner.experiment import build
    from runner.inference.svi.loop import Checkpoint
    from runner.inference.svi.program import fit

    path = tmp_path / "checkpoint.npz"
    exp = build(compose(["model=gmm", "guide=autodelta", "restarts=2", "select=final", "steps=20"])[0])
    fit(exp, checkpoint=Checkpoint(path, every_s=0.0))
    other = build(compose(["model=gmm", "guide=autodelta", "restarts=3", "select=final", "steps=20"])[0])
    with pytest.raises(ConfigError, match="was written by a different fit"):
        fit(other, checkpoint=Checkpoint(path, resume=True))
    with pytest.raises(ConfigError, match="resume: no checkpoint at"):
        fit(exp, checkpoint=Checkpoint(tmp_path / "none.npz", resume=True))
    with np.load(path) as f:  # the same arrays without the layout's name (an older runner's): refused
        older = {k: f[k] for k in f.files if k != "format"}
    np.savez(path, **older)
    with pytest.raises(ConfigError, match="was written by a different fit"):
        fit(exp, checkpoint=Checkpoint(path, resume=True))


class Stopped(KeyboardInterrupt):
    """What the run's lifecycle raises at a safe point once Ctrl-C or SIGTERM was recorded."""


def test_a_safe_point_that_raises_stops_the_fit_after_its_chunk_and_keeps_that_chunk(tmp_path):
    """safe_point is called after every chunk (after the checkpoint and the progress line); when
    it raises, the fit stops there as on Ctrl-C: the last complete chunk is written, the progress
    line closed, the exception goes on; a resume from that chunk gives the same numbers."""
    import jax

    from runner.api import compose
    from runner.app import configure_jax
    from runner.experiment import build
    from runner.inference.svi.loop import Checkpoint
    from runner.inference.svi.program import fit

    exp = build(compose(["model=gmm", "guide=autodelta", "select=final", "restarts=3", "steps=1500"])[0])
    configure_jax(exp.cache_dir)
    events = []

    class Shown:  # a progress display that records what happens
        chunk_s = 0.25

        def update(self, step, best):
            events.append(("update", step))

        def close(self):
            events.append("close")

    def safe_point():
        events.append("safe point")
        raise Stopped

    with pytest.raises(Stopped):  # no progress line, no checkpoint: chunks all the same
        fit(exp, safe_point=safe_point)
    assert events == ["safe point"]
    events.clear()
    path = tmp_path / "checkpoint.npz"
    with pytest.raises(Stopped):  # every_s: never written between chunks, only when stopped
        fit(exp, progress=Shown(), checkpoint=Checkpoint(path, every_s=1e9), safe_point=safe_point)
    assert events == [("update", 15), "safe point", "close"]  # the first chunk: steps // 100
    with np.load(path) as f:
        assert int(f["step"]) == 15
    whole = fit(exp)
    passed = []
    resumed = fit(exp, checkpoint=Checkpoint(path, every_s=1e9, resume=True), safe_point=lambda: passed.append(1))
    assert len(passed) >= 2  # chunks of about a second, each followed by the safe point
    for a, b in zip(whole, resumed):
        for x, y in zip(jax.tree.leaves(a.__dict__), jax.tree.leaves(b.__dict__)):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("spoil, message", [
    (lambda p: p.write_bytes(p.read_bytes()[:300]), "cannot be read"),  # cut short
    (lambda p: p.write_text("not a checkpoint"), "is not a .npz file (it starts b'not a ch'): not runner's checkpoint"),
    (lambda p: _resave(p, step=np.asarray(5_000_000)), "says step 5000000, outside this fit's 0..20"),
    (lambda p: _resave(p, step=np.asarray(-1)), "says step -1"),
    (lambda p: _resave(p, step=np.asarray(2.5)), "has a step that is not an integer"),
    (lambda p: _resave(p, drop="config_hash"), "has no config hash or step"),
    (lambda p: _resave(p, leaf_0=np.array([{"a": 1}], dtype=object)), "cannot be read"),  # a pickle: never loaded
])
def test_resume_refuses_a_checkpoint_that_is_not_this_runs_in_one_line(tmp_path, spoil, message):
    """A checkpoint read back is untrusted data, checked before the interrupted run is reopened
    (runner.job.check_resumable): issue 28 had a cut file end in a traceback, and a step past
    `steps` FINISH the run untrained."""
    from runner.api import compose
    from runner.experiment import build
    from runner.inference.svi.loop import Checkpoint
    from runner.inference.svi.program import fit
    from runner.job import check_resumable

    exp = build(compose(["model=gmm", "guide=autodelta", "restarts=2", "select=final", "steps=20"])[0])
    fit(exp, checkpoint=Checkpoint(tmp_path / "checkpoint.npz", every_s=0.0, config_hash=exp.config_hash))
    check_resumable(exp, tmp_path)  # the run's own: accepted
    spoil(tmp_path / "checkpoint.npz")
    with pytest.raises(ConfigError) as e:
        check_resumable(exp, tmp_path)
    assert message in str(e.value) and len(str(e.value).splitlines()) == 1, str(e.value)


def _resave(path, drop=None, **replace):
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files if k != drop}
    arrays.update(replace)
    np.savez(path, **arrays)
