"""Traced programs kept between commands (runner/inference/program_cache.py): a repeated config
reads its fit's programs instead of tracing them, with the same numbers; anything that went into
the trace and changed (data, config, a notebook's edit, a user's code) is traced anew; a torn or
foreign file is never trusted."""
import dataclasses
import json
import pickle

import numpy as np
import pytest

import runner
from runner.inference import program_cache


@pytest.fixture
def exports(monkeypatch):
    """How many programs were traced and kept (jax.export) since the fixture started."""
    calls = []
    real = program_cache._export

    def counted(jitted, args):
        calls.append(1)
        return real(jitted, args)

    monkeypatch.setattr(program_cache, "_export", counted)
    return calls


def fit(tmp_path, *overrides):
    cfg, _ = runner.compose(["model=coin", "tracking=none", "steps=50", f"jax.cache_dir={tmp_path}", *overrides])
    exp = runner.build(cfg)
    return exp, runner.fit(exp)


def kept(tmp_path) -> set:
    return {p.name for p in (tmp_path / "programs").glob("*.program")}


def test_a_repeated_config_reads_its_programs_and_gets_the_same_numbers(tmp_path, exports):
    _, first = fit(tmp_path)
    assert len(exports) == 3 and len(kept(tmp_path)) == 3  # prepare, advance, finish
    _, again = fit(tmp_path)
    assert len(exports) == 3, "the second fit traced its programs again"
    assert again.scalars["final_loss"] == first.scalars["final_loss"]
    np.testing.assert_array_equal(again.curves["loss"], first.curves["loss"])
    # the same numbers as the program jitted directly (no kept programs: jax.cache_dir=null), to
    # float32 rounding (another XLA program: the exported one inside a jit; equal on this CPU)
    cfg, _ = runner.compose(["model=coin", "tracking=none", "steps=50", "jax.cache_dir=null"])
    direct = runner.fit(runner.build(cfg))
    np.testing.assert_allclose(direct.scalars["final_loss"], first.scalars["final_loss"], rtol=1e-6)
    np.testing.assert_allclose(direct.curves["loss"], first.curves["loss"], rtol=1e-6)
    # the analytic answer still: coin's Beta(13, 9) posterior mode, AutoDelta's MAP
    assert abs(float(np.ravel(first.params["latent_fairness_auto_loc"])[0]) - 12 / 20) < 0.1


def test_the_seed_is_an_argument_not_part_of_the_key(tmp_path, exports):
    _, zero = fit(tmp_path, "seed=0", "restarts=3")
    _, one = fit(tmp_path, "seed=1", "restarts=3")
    assert len(exports) == 3 and len(kept(tmp_path)) == 3
    assert zero.scalars["initial_loss_median"] != one.scalars["initial_loss_median"]


def test_what_went_into_the_trace_makes_another_key(tmp_path, exports):
    fit(tmp_path)
    for override in ("steps=60", "optim.lr=0.02", "loss.num_particles=2", "jax.x64=true"):
        before = kept(tmp_path)
        fit(tmp_path, override)
        assert len(kept(tmp_path) - before) == 3, f"{override} reused a program traced without it"
    # the data's values: a model that computes with its data has them as constants
    exp, _ = fit(tmp_path)
    base = program_cache.for_experiment(exp).key
    other = dataclasses.replace(exp, data=np.asarray(exp.data) + 1)
    assert program_cache.for_experiment(other) is None  # not the data build made: traced anew
    cfg, _ = runner.compose(["model=coin", "tracking=none", "steps=50", f"jax.cache_dir={tmp_path}",
                             "data.heads=13"])
    assert program_cache.for_experiment(runner.build(cfg)).key != base


USER_MODEL = """
import numpyro
import numpyro.distributions as dist
from numpyro.infer import Trace_ELBO


class MyELBO(Trace_ELBO):
    pass


def model(flips=None):
    p = numpyro.sample("p", dist.Beta(2.0, 2.0))
    with numpyro.plate("n", flips.shape[0]):
        numpyro.sample("obs", dist.Bernoulli(p), obs=flips)
"""


def test_no_kept_program_for_a_users_code_or_a_changed_experiment(tmp_path, exports, monkeypatch):
    exp, _ = fit(tmp_path)
    assert program_cache.for_experiment(exp) is not None
    exp.inference.steps = 80  # a notebook's edit after build
    assert program_cache.for_experiment(exp) is None
    exp.inference.steps = 50
    assert program_cache.for_experiment(exp) is not None
    loss = exp.inference.loss
    from numpyro.infer import TraceMeanField_ELBO

    exp.inference.loss = TraceMeanField_ELBO()  # another loss object
    assert program_cache.for_experiment(exp) is None
    exp.inference.loss = loss
    assert program_cache.for_experiment(exp) is not None
    # another experiment made from this one: its restarts (in the programs, not in their arguments)
    assert program_cache.for_experiment(dataclasses.replace(exp, restarts=7)) is None
    assert program_cache.for_experiment(dataclasses.replace(exp, cache_dir=None)) is None
    # a function model: the user's code is not in the key
    (tmp_path / "mine.py").write_text(USER_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "d.json").write_text('{"flips": [1, 1, 0, 1]}')
    cfg, _ = runner.compose(["model=fn", "model.fn=mine.model", "data=json", f"data.path={tmp_path}/d.json",
                             "tracking=none", "steps=20", f"jax.cache_dir={tmp_path}"])
    user = runner.build(cfg)
    assert user.built is None and program_cache.for_experiment(user) is None
    count = len(exports)
    runner.fit(user)
    assert len(exports) == count  # traced as before, nothing kept
    # a built-in model with a target of the user's (their loss): their code is not in the key either
    cfg, _ = runner.compose(["model=coin", "tracking=none", f"jax.cache_dir={tmp_path}", "loss._target_=mine.MyELBO"])
    assert runner.build(cfg).built is None


def test_a_torn_or_foreign_file_is_traced_anew(tmp_path, exports):
    _, first = fit(tmp_path)
    for executable in (tmp_path / "programs").glob("*.executable"):  # read first where there is one:
        executable.unlink()  # this test is the programs' (the next one the executables')
    files = sorted((tmp_path / "programs").glob("*.program"))
    files[0].write_bytes(files[0].read_bytes()[:100])  # torn
    files[1].write_bytes(pickle.dumps((program_cache.FORMAT, b"not a program", None)))
    # a function reached through a runner module (os.system as program_cache's `os.system`)
    files[2].write_bytes(b"\x80\x04crunner.inference.program_cache\nos.system\n(S'touch "
                         + str(tmp_path / "ran").encode() + b"'\ntR.")
    _, again = fit(tmp_path)
    assert not (tmp_path / "ran").exists(), "a kept file ran code"
    assert len(exports) == 6  # the three traced anew...
    assert again.scalars["final_loss"] == first.scalars["final_loss"]
    _, third = fit(tmp_path)
    assert len(exports) == 6  # ...and replaced
    assert third.scalars["final_loss"] == first.scalars["final_loss"]


@pytest.fixture
def own_xla_cache():
    """XLA's persistent cache opened again under the next build's jax.cache_dir (the test's own),
    and again after the test (JAX opens it once per process: the session's folder otherwise)."""
    from jax.experimental.compilation_cache.compilation_cache import reset_cache

    reset_cache()
    yield
    reset_cache()


@pytest.fixture
def compiles(monkeypatch):
    """How many kept programs were lowered and compiled (not read as executables)."""
    calls = []
    real = program_cache._compile

    def counted(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(program_cache, "_compile", counted)
    return calls


def executables(tmp_path) -> set:
    return {p.name for p in (tmp_path / "programs").glob("*.executable")}


def test_a_kept_executable_is_run_without_lowering_or_compiling(tmp_path, exports, compiles, own_xla_cache):
    """A program XLA compiled for the run that kept it is kept compiled too: a repeated config
    runs it as it is (nothing traced, lowered or compiled; ~45 ms of the coin's 1.3 s command,
    ~90 ms of the GMM's), with the same numbers."""
    _, first = fit(tmp_path)
    assert len(exports) == len(compiles) == 3 and len(executables(tmp_path)) == 3
    _, again = fit(tmp_path, "seed=0")
    assert len(exports) == len(compiles) == 3, "the repeated config compiled its programs again"
    assert again.scalars["final_loss"] == first.scalars["final_loss"]
    np.testing.assert_array_equal(again.curves["loss"], first.curves["loss"])
    np.testing.assert_array_equal(np.ravel(again.params["latent_fairness_auto_loc"]),
                                  np.ravel(first.params["latent_fairness_auto_loc"]))
    fit(tmp_path, "seed=1", "restarts=3")  # another config: its own programs and executables
    assert len(compiles) == 6 and len(executables(tmp_path)) == 6
    fit(tmp_path, "seed=2", "restarts=3")
    assert len(compiles) == 6


def test_an_executable_xlas_cache_loaded_is_not_kept(tmp_path, exports, compiles, own_xla_cache):
    """XLA's persistent cache gives an executable whose CPU code is not in it: serialized again, it
    fails when run ("Function ... not found"). Such a program is compiled from the kept program
    on every run (as before executables were kept), never kept broken."""
    _, first = fit(tmp_path)
    for executable in (tmp_path / "programs").glob("*.executable"):
        executable.unlink()
    for n in (6, 9):  # XLA's cache answers the kept programs each time
        _, again = fit(tmp_path)
        assert len(compiles) == n and not executables(tmp_path)
        assert again.scalars["final_loss"] == first.scalars["final_loss"]
    assert len(exports) == 3


def test_a_torn_or_foreign_executable_is_compiled_anew(tmp_path, compiles, own_xla_cache):
    """A torn file, one of another format, and one whose pickle would call a function outside
    JAX (os.system through a runner module): none is loaded, none runs code; the program is
    compiled from its kept StableHLO with the same numbers."""
    _, first = fit(tmp_path)
    files = sorted((tmp_path / "programs").glob("*.executable"))
    assert len(files) == 3
    files[0].write_bytes(files[0].read_bytes()[:1000])  # torn
    files[1].write_bytes(pickle.dumps((program_cache.FORMAT, b"a program, not an executable", None, None)))
    fmt, payload, in_tree, out_tree = program_cache._Trees(__import__("io").BytesIO(files[2].read_bytes())).load()
    evil = (b"\x80\x04crunner.inference.program_cache\nos.system\n(S'touch " + str(tmp_path / "ran").encode()
            + b"'\ntR.")
    files[2].write_bytes(pickle.dumps((fmt, evil, in_tree, out_tree)))
    _, again = fit(tmp_path)
    assert not (tmp_path / "ran").exists(), "a kept executable ran code"
    assert len(compiles) == 6  # compiled from the kept programs (XLA's cache answers: not kept again)
    assert again.scalars["final_loss"] == first.scalars["final_loss"]
    assert not executables(tmp_path)  # removed, not read again on every run


@pytest.mark.parametrize("module, name", [("jax._src.config", "os.system"), ("jax._src.config", "os"),
                                          ("jax", "_src"), ("jaxlib._jax", "pytree"),
                                          ("jax._src.pickle_util", "loads"), ("jaxlib._jax", "load_pjrt_plugin")])
def test_an_executables_pickle_builds_nothing_but_jaxs_own(tmp_path, module, name):
    """The unpickler of a kept executable resolves only the globals an executable's pickle names
    (program_cache.EXECUTABLE_GLOBALS): not a module, not what a JAX module imported (os.system
    through jax._src.config's `os`), not a JAX function that loads a pickle (cloudpickle's loads,
    which would run any code) or a plugin."""
    import importlib

    import jax

    assert hasattr(importlib.import_module("jax._src.config"), "os")  # the path exists to be refused

    def short(text: str) -> bytes:
        return b"\x8c" + bytes([len(text)]) + text.encode()

    evil = (b"\x80\x04" + short(module) + short(name) + b"\x93" + short(f"touch {tmp_path / 'ran'}")
            + b"\x85R.")
    backend = jax.devices()[0].client
    with pytest.raises(pickle.UnpicklingError, match="not part of an executable"):
        program_cache._executables()(__import__("io").BytesIO(evil), backend).load()
    assert not (tmp_path / "ran").exists()


def test_a_kept_executable_that_fails_when_run_is_forgotten_and_compiled(tmp_path, compiles, own_xla_cache,
                                                                        monkeypatch):
    """If an executable XLA's cache loaded were ever kept (its CPU code missing: it fails when run),
    its first call fails, the file is forgotten and the program compiled from its StableHLO: the
    run that meets it (here: its first program takes no donated argument) and every later run get
    the numbers of a run without it."""
    _, first = fit(tmp_path)
    for executable in (tmp_path / "programs").glob("*.executable"):
        executable.unlink()
    real = program_cache._compile
    monkeypatch.setattr(program_cache, "_compile", lambda *a: (real(*a)[0], True))  # as if compiled here
    fit(tmp_path)
    assert len(executables(tmp_path)) == 3  # XLA's cache answered: three broken copies kept
    monkeypatch.setattr(program_cache, "_compile", real)
    outcomes = []
    for _ in range(3):
        try:
            outcomes.append(fit(tmp_path)[1].scalars["final_loss"])
        except Exception as e:  # a donated argument the failed call consumed: this run fails, once
            outcomes.append(str(e))
    assert outcomes[-1] == outcomes[-2] == first.scalars["final_loss"], outcomes
    assert outcomes[0] == first.scalars["final_loss"] or "the next run compiles it" in outcomes[0], outcomes
    assert not executables(tmp_path)


def test_em_keeps_its_program(tmp_path, exports):
    overrides = ["model=gmm", "inference=em", "data=gmm1d", "tracking=none", "restarts=5", f"jax.cache_dir={tmp_path}"]
    first = runner.fit(runner.build(runner.compose(overrides)[0]))
    again = runner.fit(runner.build(runner.compose(overrides)[0]))
    assert len(exports) == 1
    assert again.scalars["avg_loglik"] == first.scalars["avg_loglik"]


def test_a_runs_file_programs_are_kept_with_the_same_files(tmp_path, exports):
    """GMM: the assignments (infer_discrete), avg_loglik at the MAP and inference_data.nc's
    log-likelihood (enumerated) read on the second run; the files are the same as the first run's
    and as an uncached run's."""
    import h5netcdf

    def files(folder, *extra):
        runner.run(["model=gmm", "guide=autodelta", "tracking=none", "steps=50", "restarts=4", *extra],
                   run_dir=tmp_path / folder, quiet=True)
        with h5netcdf.File(tmp_path / folder / "inference_data.nc", "r") as f:
            loglik = np.asarray(f["log_likelihood"]["obs"][...])
        avg = json.loads((tmp_path / folder / "metrics.json").read_text())["scalars"]["avg_loglik"]
        return (tmp_path / folder / "assignments.json").read_text(), loglik, avg

    first = files("first", f"jax.cache_dir={tmp_path}/cache")
    # prepare, advance, finish, avg_loglik's, the assignments, the log-likelihood
    assert len(exports) == 6
    again = files("again", f"jax.cache_dir={tmp_path}/cache")
    assert len(exports) == 6
    direct = files("direct", "jax.cache_dir=null")
    assert first[0] == again[0] == direct[0] and first[2] == again[2]
    assert abs(direct[2] - first[2]) < 1e-6 * abs(first[2]) and np.isfinite(first[2])
    z = json.loads(first[0])["assignment"]  # the tutorial's MAP assignments [0 0 1 1 1], up to the labels
    assert z[0] == z[1] != z[2] == z[3] == z[4]
    np.testing.assert_array_equal(again[1], first[1])
    np.testing.assert_allclose(direct[1], first[1], rtol=1e-6)
    # the seed's log-likelihood at its MAP (weights .375/.625, locs .5/10.98, scale .65): finite, negative
    assert np.all(np.isfinite(first[1])) and first[1].shape[-1] == 5


def test_lbfgs_keeps_its_programs(tmp_path, exports):
    """optim=lbfgs: jaxopt's state is in the fit's outputs (its named tuples read back)."""
    _, first = fit(tmp_path, "optim=lbfgs", "steps=20")
    _, again = fit(tmp_path, "optim=lbfgs", "steps=20")
    assert len(exports) == 3
    assert again.scalars["final_loss"] == first.scalars["final_loss"]


def test_a_program_that_cannot_be_exported_is_compiled_as_before(tmp_path, monkeypatch):
    def refuse(jitted, args):
        raise ValueError("a custom call jax.export does not take")

    monkeypatch.setattr(program_cache, "_export", refuse)
    _, out = fit(tmp_path)
    assert np.isfinite(out.scalars["final_loss"]) and not kept(tmp_path)


def test_no_kept_program_while_a_source_is_newer_than_the_code_running(tmp_path, monkeypatch):
    """A runner source edited after this process imported runner (a long sweep during a checkout):
    the code running is not the code on disk, whose hash the key would hold."""
    exp, _ = fit(tmp_path)
    assert program_cache.for_experiment(exp) is not None
    monkeypatch.setattr(runner, "IMPORTED_AT", 0.0)  # as if every source changed since
    assert program_cache.for_experiment(exp) is None


def test_the_guides_check_is_kept_like_the_programs(tmp_path, monkeypatch):
    """SVI's check of the guide against the model (an abstract trace of both) is kept under the
    programs' key: a config built before reads its answer (deterministic, continuous) instead of
    tracing; another guide, a user's model or jax.cache_dir=null checks again; a guide the check
    refuses is refused on every build (nothing kept)."""
    from runner.errors import ConfigError
    from runner.inference.svi import method

    traced = []
    real = method.check_guide

    def counted(svi, model, data):
        traced.append(type(svi.guide_builder).__name__)
        return real(svi, model, data)

    monkeypatch.setattr(method, "check_guide", counted)

    def flags(*overrides):
        cfg, _ = runner.compose(["model=coin", "tracking=none", *overrides])
        svi = runner.build(cfg).inference
        return svi.deterministic, svi.continuous

    cache = f"jax.cache_dir={tmp_path}"
    assert flags(cache) == (True, False) and len(traced) == 1  # autodelta: a point mass, deterministic
    assert flags(cache) == (True, False) and len(traced) == 1  # read, not traced
    assert flags(cache, "seed=3") == (True, False) and len(traced) == 1  # the seed is not in the key
    assert flags(cache, "guide=autonormal") == (False, True) and len(traced) == 2
    assert flags(cache, "guide=autonormal") == (False, True) and len(traced) == 2
    assert flags("jax.cache_dir=null") == (True, False) and len(traced) == 3
    assert len(list((tmp_path / "programs").glob("*.fact"))) == 2
    # a user's model (its own code): checked on every build
    (tmp_path / "users_coin.py").write_text(USERS_COIN)
    (tmp_path / "flips.json").write_text(json.dumps({"flips": [1, 0, 1, 1]}))
    monkeypatch.syspath_prepend(str(tmp_path))
    for n in (4, 5):
        cfg, _ = runner.compose(["model=fn", "model.fn=users_coin.coin", "tracking=none", cache, "data=json",
                                 f"data.path={tmp_path}/flips.json"])
        assert runner.build(cfg).inference.deterministic and len(traced) == n
    # a guide the check refuses (a joint AutoContinuous guide on an enumerated model): on every build
    for n in (6, 7):
        with pytest.raises(ConfigError, match="AutoContinuous"):
            runner.build(runner.compose(["model=gmm", "guide=automvn", "tracking=none", cache])[0])
        assert len(traced) == n
    assert len(list((tmp_path / "programs").glob("*.fact"))) == 2


USERS_COIN = """
import numpyro
import numpyro.distributions as dist


def coin(flips):
    f = numpyro.sample("f", dist.Beta(1.0, 1.0))
    with numpyro.plate("N", flips.shape[0]):
        numpyro.sample("obs", dist.Bernoulli(f), obs=flips)
"""


@pytest.mark.parametrize("x64", [False, True])
def test_on_device_makes_the_arrays_jnp_asarray_makes(x64):
    """program_cache.on_device: the same dtype, weak type, device and commitment as jnp.asarray (a
    kept program's signature is made of them), NumPy's arrays and scalars by a plain transfer."""
    import jax
    import jax.numpy as jnp

    was = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", x64)
    try:
        tree = {"f64": np.linspace(0, 1, 5), "f32": np.ones((2, 3), np.float32), "i64": np.arange(4),
                "bool": np.array([True, False]), "np_scalar": np.float32(2.5), "py_float": 1.5, "py_int": 3,
                "jax": jnp.ones(2), "nested": [np.zeros(2, np.int32), {"u8": np.arange(3, dtype=np.uint8)}]}
        got, want = program_cache.on_device(tree), jax.tree.map(jnp.asarray, tree)
        assert jax.tree.structure(got) == jax.tree.structure(want)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            assert isinstance(g, jax.Array)
            assert (g.dtype, g.shape, g.weak_type, g.committed, g.sharding) == \
                (w.dtype, w.shape, w.weak_type, w.committed, w.sharding)
            np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
        assert program_cache.signature((got,)) == program_cache.signature((want,))
    finally:
        jax.config.update("jax_enable_x64", was)


def test_on_device_never_shares_the_callers_array():
    """A transfer to the CPU shares a 64-byte aligned NumPy array's memory (measured, JAX 0.10):
    on_device's arrays are their own, as jnp.asarray's were."""
    buffer = np.zeros(1000 + 16, np.float32)
    start = (-buffer.ctypes.data % 64) // 4
    x = buffer[start:start + 1000]
    x[:] = np.arange(1000)
    assert x.ctypes.data % 64 == 0
    on = program_cache.on_device({"x": x})["x"]
    x[:] = -1
    assert float(on[0]) == 0.0 and float(on[-1]) == 999.0
