"""runner/schema.py: every config key's type and range in one place, one message `<key> must be
<what>, got <value!r>`. Table-driven: each run-level key (schema.RUN) with good values and each
kind of bad value (wrong type, true/false for a number, out of range, NaN/inf, null where null is
not allowed) and the exact message; each method setting, named as the user typed it; the
vocabulary itself; a user's method typed by its plain annotations."""
import math

import pytest
from conftest import ROOT
from omegaconf import OmegaConf

import runner
from runner import schema
from runner.errors import ConfigError
from runner.inference import from_config

CONF = ROOT / "runner" / "conf"


def leaves(node, prefix=""):
    """The dotted keys of a plain container's leaves (an empty mapping has none)."""
    if isinstance(node, dict):
        return {k for key, v in node.items() for k in leaves(v, f"{prefix}.{key}" if prefix else str(key))}
    return {prefix}


# --- the table is conf/config.yaml's keys, with its defaults ---------------------------------------

def test_every_run_level_key_of_the_config_is_in_the_table():
    top = OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml"), resolve=False)
    keys = {k for k in leaves(top) if k.split(".")[0] not in ("defaults", "hydra", "hints")}  # hints: a free mapping
    assert keys | {"data.batch_size"} == set(schema.RUN)
    for path in sorted((CONF / "data").glob("*.yaml")):  # every data group with a loader takes batch_size
        node = OmegaConf.load(path)
        assert ("_target_" not in node and "defaults" not in node) or node.get("batch_size", "absent") is None, path


def test_the_tables_defaults_are_the_configs():
    top = OmegaConf.load(CONF / "config.yaml")
    for key, (check, default) in schema.RUN.items():
        check(key, default)  # a default passes its own check
        if key != "jax.cache_dir":  # a folder under $HOME; a config without the key: no cache
            assert OmegaConf.select(top, key) == default, key


# --- each run-level key: good values, each kind of bad value, the exact message ---------------------

R = 2**31 - 1
RUN_CASES = [  # (key, value, the exact message; None: accepted as it is)
    ("seed", 0, None), ("seed", R, None),
    ("seed", R + 1, f"seed must be an integer from 0 to {R}, got {R + 1}"),  # JAX would make 2**32 seed 0
    ("seed", -1, f"seed must be an integer from 0 to {R}, got -1"),
    ("seed", 1.5, f"seed must be an integer from 0 to {R}, got 1.5"),
    ("seed", True, f"seed must be an integer from 0 to {R}, got True"),
    ("seed", "abc", f"seed must be an integer from 0 to {R}, got 'abc'"),
    ("steps", 1, None), ("steps", 50000, None),
    ("steps", 0, "steps must be a positive integer, got 0"),
    ("steps", -3, "steps must be a positive integer, got -3"),
    ("steps", "abc", "steps must be a positive integer, got 'abc'"),
    ("steps", 2.0, "steps must be a positive integer, got 2.0"),
    ("steps", True, "steps must be a positive integer, got True"),
    ("steps", None, "steps must be a positive integer, got None"),
    ("restarts", 100, None), ("restarts", 0, "restarts must be a positive integer, got 0"),
    ("replicates", 3, None), ("replicates", 0, "replicates must be a positive integer, got 0"),
    ("replicates", "2", "replicates must be a positive integer, got '2'"),
    ("select", "initial", None), ("select", "final", None),
    ("select", "best", "select must be one of initial|final, got 'best'"),
    ("select", None, "select must be one of initial|final, got None"),
    ("progress", False, None), ("progress", "maybe", "progress must be true or false, got 'maybe'"),
    ("progress", 1, "progress must be true or false, got 1"),
    ("rerun", True, None), ("rerun", "yes", "rerun must be true or false, got 'yes'"),
    ("resume", None, None), ("resume", "outputs/2024-05-01/10-00-00", None), ("resume", 2024, None),
    ("resume", "", "resume must be a run directory or a run id of the store or null, got ''"),
    ("resume", True, "resume must be a run directory or a run id of the store or null, got True"),
    ("posterior.samples", 0, None), ("posterior.samples", 500, None),
    ("posterior.samples", -1, "posterior.samples must be an integer >= 0, got -1"),
    ("posterior.samples", 1.5, "posterior.samples must be an integer >= 0, got 1.5"),
    ("checkpoint.every_s", None, None), ("checkpoint.every_s", 60, None), ("checkpoint.every_s", 0.5, None),
    ("checkpoint.every_s", 0, "checkpoint.every_s must be a positive number of seconds or null, got 0"),
    ("checkpoint.every_s", "abc", "checkpoint.every_s must be a positive number of seconds or null, got 'abc'"),
    ("checkpoint.every_s", math.inf, "checkpoint.every_s must be a positive number of seconds or null, got inf"),
    ("checkpoint.every_s", True, "checkpoint.every_s must be a positive number of seconds or null, got True"),
    ("stop.rtol", None, None), ("stop.rtol", 0, None), ("stop.rtol", 1e-4, None),
    ("stop.rtol", -1, "stop.rtol must be a number >= 0 (or null: no early stopping), got -1"),
    ("stop.rtol", "abc", "stop.rtol must be a number >= 0 (or null: no early stopping), got 'abc'"),
    ("stop.rtol", math.nan, "stop.rtol must be a number >= 0 (or null: no early stopping), got nan"),
    ("stop.patience", 1, None), ("stop.patience", 0, "stop.patience must be a positive integer, got 0"),
    ("stop.window", 500, None), ("stop.window", 1.5, "stop.window must be a positive integer, got 1.5"),
    ("diagnostics.psis_draws", 0, None), ("diagnostics.psis_draws", 10, None),
    ("diagnostics.psis_draws", 5, "diagnostics.psis_draws must be 0 (off) or an integer >= 10, got 5"),
    ("diagnostics.psis_draws", -1, "diagnostics.psis_draws must be 0 (off) or an integer >= 10, got -1"),
    ("diagnostics.psis_draws", False, "diagnostics.psis_draws must be 0 (off) or an integer >= 10, got False"),
    ("data.batch_size", None, None), ("data.batch_size", 4, None),
    ("data.batch_size", 0, "data.batch_size must be a positive integer or null, got 0"),
    ("data.batch_size", 2.5, "data.batch_size must be a positive integer or null, got 2.5"),
    ("jax.cache_dir", None, None), ("jax.cache_dir", "/tmp/jax-cache", None),
    ("jax.cache_dir", "", "jax.cache_dir must be a folder or null, got ''"),
]


@pytest.fixture(scope="module")
def composed():
    return runner.compose()[0]


@pytest.mark.parametrize("key, value, message", RUN_CASES, ids=[f"{k}={v!r}" for k, v, _ in RUN_CASES])
def test_run_level_keys(composed, key, value, message):
    cfg = composed.copy()
    OmegaConf.update(cfg, key, value, force_add=True)
    if message is None:
        got = schema.run_settings(cfg)[key]
        assert got == value and type(got) is type(value)
    else:
        with pytest.raises(ConfigError) as e:
            schema.run_settings(cfg)
        assert str(e.value) == message


def test_a_key_missing_or_unresolvable_is_one_line(composed):
    for value, message in [("???", "steps is required: set steps=..."),
                           ("${nope}", "steps cannot be resolved: Interpolation key 'nope' not found")]:
        cfg = composed.copy()
        OmegaConf.update(cfg, "steps", value)
        with pytest.raises(ConfigError) as e:
            schema.run_settings(cfg)
        assert str(e.value) == message


def test_a_config_without_a_key_gets_the_tables_default():
    cfg = OmegaConf.create({"seed": 3, "steps": 10, "restarts": 1, "replicates": 1, "select": "final"})
    got = schema.run_settings(cfg)
    assert got["seed"] == 3 and got["progress"] is True and got["checkpoint.every_s"] == 60
    assert got["stop.rtol"] is None and got["data.batch_size"] is None and got["jax.cache_dir"] is None


# --- a method's settings: its fields, named as the user typed them ---------------------------------

METHOD_CASES = [  # (overrides, the exact message)
    (["inference=em", "inference.iterations=0"], "inference.iterations must be a positive integer, got 0"),
    (["inference=em", "inference.iterations=abc"], "inference.iterations must be a positive integer, got 'abc'"),
    (["inference=em", "inference.tol=-1"], "inference.tol must be a number >= 0, got -1"),
    (["inference=em", "inference.reg_covar=nan"], "inference.reg_covar must be a number >= 0, got nan"),
    (["inference=em", "inference.init=best"], "inference.init must be one of kmeans|random, got 'best'"),
    (["inference=nuts", "inference.warmup=-1"], "inference.warmup must be an integer >= 0, got -1"),
    (["inference=nuts", "inference.samples=0"], "inference.samples must be a positive integer, got 0"),
    (["inference=nuts", "inference.chains=true"], "inference.chains must be a positive integer, got True"),
    (["inference=nuts", "inference.target_accept=1.5"], "inference.target_accept must be in (0, 1), got 1.5"),
    (["inference=nuts", "inference.target_accept=0"], "inference.target_accept must be in (0, 1), got 0"),
    (["inference=nuts", "inference.init=prior"], "inference.init must be one of median|uniform|sample, got 'prior'"),
    # SVI: conf/inference/svi.yaml reads the top-level keys; a message names the key the user typed
    (["steps=abc"], "steps must be a positive integer, got 'abc'"),
    (["inference.steps=0"], "inference.steps must be a positive integer, got 0"),
    (["select=best"], "select must be one of initial|final, got 'best'"),
    (["replicates=0"], "replicates must be a positive integer, got 0"),
    (["stop.rtol=-1"], "stop.rtol must be a number >= 0 (or null: no early stopping), got -1"),
    (["stop.window=1.5"], "stop.window must be a positive integer, got 1.5"),
    (["inference.stop.window=0"], "inference.stop.window must be a positive integer, got 0"),
    (["diagnostics.psis_draws=5"], "diagnostics.psis_draws must be 0 (off) or an integer >= 10, got 5"),
    (["inference.psis_draws=5"], "inference.psis_draws must be 0 (off) or an integer >= 10, got 5"),
    (["data.batch_size=0"], "data.batch_size must be a positive integer or null, got 0"),
    (["tracking.max_points_per_curve=1"], "tracking.max_points_per_curve must be an integer >= 2 or null, got 1"),
    (["tracking.max_points_per_curve=abc"], "tracking.max_points_per_curve must be an integer >= 2 or null, got 'abc'"),
]


@pytest.mark.parametrize("overrides, message", METHOD_CASES, ids=[" ".join(o) for o, _ in METHOD_CASES])
def test_method_settings(overrides, message):
    cfg, _ = runner.compose(overrides)
    with pytest.raises(ConfigError) as e:
        from_config(cfg.inference)
    assert str(e.value) == message


def test_svi_takes_its_settings_from_the_keys_users_type():
    from runner.inference.svi.method import SVI, Stop

    cfg, _ = runner.compose(["steps=7", "select=initial", "replicates=2", "stop.rtol=0.01", "stop.patience=3",
                             "stop.window=4", "diagnostics.psis_draws=0", "data.batch_size=2",
                             "tracking.max_points_per_curve=null"])
    svi = from_config(cfg.inference)
    assert type(svi) is SVI
    assert (svi.steps, svi.select, svi.replicates, svi.stop) == (7, "initial", 2, Stop(0.01, 3, 4))
    assert (svi.psis_draws, svi.batch_size, svi.curve_points) == (0, 2, None)
    assert OmegaConf.to_container(cfg.inference, resolve=True)["steps"] == 7  # the run's config.yaml shows it
    cfg, _ = runner.compose(["steps=7", "inference.steps=9", "stop.rtol=0", "~tracking.max_points_per_curve"])
    svi = from_config(cfg.inference)
    assert svi.steps == 9 and svi.stop == Stop(0.0, 1000, 500) and isinstance(svi.stop.rtol, float)
    assert svi.curve_points == 2000  # a tracking backend without the key
    cfg, _ = runner.compose(["model=gaussian2d"])  # data=none: no batch_size
    svi = from_config(cfg.inference)
    assert svi.stop is None and svi.batch_size is None and svi.steps == 50000


def test_a_users_method_from_its_own_file_is_typed_by_its_annotations(monkeypatch):
    """tests/fixtures/my_method/importance.py declares `draws: int = 20000` and nothing else."""
    import sys

    monkeypatch.syspath_prepend(str(ROOT / "tests" / "fixtures" / "my_method"))
    monkeypatch.delitem(sys.modules, "importance", raising=False)
    node = OmegaConf.create({"_target_": "importance.Importance", "draws": 500})
    assert from_config(node).draws == 500
    for bad in ("abc", 1.5, True):
        with pytest.raises(ConfigError) as e:
            from_config(OmegaConf.create({"_target_": "importance.Importance", "draws": bad}))
        assert str(e.value) == f"inference.draws must be an integer, got {bad!r}"
    monkeypatch.delitem(sys.modules, "importance", raising=False)


def test_check_fields_reads_declared_ranges_types_and_nested_blocks():
    from dataclasses import dataclass, field

    @dataclass
    class Inner:
        n: int = schema.setting(1, schema.positive_int)

    @dataclass
    class Settings:
        draws: int = schema.setting(10, schema.integer(5))
        maybe: float | None = None
        inner: Inner | None = None
        anything: object = None  # no check for a type outside int, float, str, bool
        built: int = field(default=0, init=False)  # not a setting

    ok = {"draws": 5, "maybe": None, "inner": {"n": 2}, "anything": "x", "built": "ignored"}
    schema.check_fields(Settings, ok, "p")
    for bad, message in [({"draws": 4}, "p.draws must be an integer >= 5, got 4"),
                         ({"maybe": "x"}, "p.maybe must be a number or null, got 'x'"),
                         ({"inner": {"n": 0}}, "p.inner.n must be a positive integer, got 0")]:
        with pytest.raises(ConfigError) as e:
            schema.check_fields(Settings, bad, "p")
        assert str(e.value) == message
    # a setting filled by interpolation is named by the key it reads
    for node, message in [({"top": "abc", "s": {"draws": "${top}"}}, "top must be an integer >= 5, got 'abc'"),
                          ({"s": {"maybe": "${oc.select:nowhere.x,oops}"}}, "nowhere.x must be a number or null, got 'oops'"),
                          ({"s": {"draws": "${.other}", "other": 1}}, "p.draws must be an integer >= 5, got 1")]:
        with pytest.raises(ConfigError) as e:
            schema.check_fields(Settings, OmegaConf.create(node).s, "p")
        assert str(e.value) == message


# --- the vocabulary ---------------------------------------------------------------------------------

VOCABULARY = [  # (check, what it says, values it accepts, values it refuses)
    (schema.positive_int, "a positive integer", [1, 10**12], [0, -1, 1.0, True, "1", None]),
    (schema.integer(0), "an integer >= 0", [0, 5], [-1, 0.5, False]),
    (schema.integer(0, 9), "an integer from 0 to 9", [0, 9], [10, -1]),
    (schema.integer(maximum=3), "an integer <= 3", [-5, 3], [4]),
    (schema.integer(), "an integer", [-5, 0], [1.5, True, "2"]),
    (schema.number(), "a number", [1, 0.5, math.inf], [True, "1", None]),
    (schema.number(0), "a number >= 0", [0, 0.0, 2.5], [-1e-9, math.nan, math.inf, False, "0"]),
    (schema.positive, "a positive finite number", [1e-9, 3], [0, -1, math.nan, math.inf, True]),
    (schema.probability, "in (0, 1)", [0.5, 1e-9], [0, 1, 1.5, math.nan, True]),
    (schema.one_of("a", "b"), "one of a|b", ["a", "b"], ["c", None, 1]),
    (schema.one_of(1, 2), "one of 1|2", [1, 2], [True, 1.0, "1"]),
    (schema.boolean, "true or false", [True, False], [0, 1, "true", None]),
    (schema.string, "a string", ["", "x"], [1, None]),
    (schema.optional(schema.positive_int), "a positive integer or null", [None, 3], [0, "x"]),
    (schema.optional(schema.number(0), null="off"), "a number >= 0 (or null: off)", [None, 0], [-1]),
    (schema.zero_or(schema.integer(10)), "0 (off) or an integer >= 10", [0, 10], [5, 0.0, False]),
    (schema.positive_int.about("the mixture's components"), "a positive integer (the mixture's components)", [2], [0]),
]


@pytest.mark.parametrize("check, what, good, bad", VOCABULARY, ids=[v[1] for v in VOCABULARY])
def test_the_vocabulary(check, what, good, bad):
    assert check.what == what
    for value in good:
        assert check("k", value) is value
    for value in bad:
        with pytest.raises(ConfigError) as e:
            check("k", value)
        assert str(e.value) == f"k must be {what}, got {value!r}"
