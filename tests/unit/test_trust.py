"""runner/trust.py, a real trust boundary: a config read back from a store is data. A stored
`_target_` / `model.fn` resolves only if the resolved object is runner's own (its components), a
Hydra plugin package's or a package the reader trusts; nothing untrusted is imported. (Through
runner.predict and the pyfunc model, against a real run: tests/e2e/test_trust.py.)"""
import sys

import pytest
from omegaconf import OmegaConf

from runner.errors import ConfigError
from runner.trust import check_stored_config, resolve_trusted, trusted_roots


# --- resolve_trusted ---------------------------------------------------------------------------

@pytest.mark.parametrize("path,says", [
    ("numpyro.infer.mcmc.os.system", "'numpyro' is not runner"),  # refused before any import
    ("runner.models.gmm.np.f2py.os.system", "resolves to posix.system"),  # the resolved object's module
    ("os.system", "'os' is not runner"),
    ("builtins.exec", "'builtins' is not runner"),
    ("runner.api.fit_config", "within runner only the components"),  # composes and runs a new config
    ("runner.models.gmm.GMM.__init__", "public top-level classes and functions"),  # a method, any `self`
    ("runner.data.np.load", "resolves to numpy.load"),
])
def test_untrusted_targets_are_refused(path, says):
    with pytest.raises(ConfigError, match="data._target_=") as e:
        resolve_trusted(path, trusted_roots(), "data._target_")
    assert says in str(e.value) and len(str(e.value).splitlines()) == 1


def test_runner_components_resolve():
    roots = trusted_roots()
    from runner.losses import traceenum_elbo
    from runner.models.gmm import GMM

    assert resolve_trusted("runner.models.gmm.GMM", roots) is GMM
    assert resolve_trusted("runner.losses.traceenum_elbo", roots) is traceenum_elbo


def test_an_untrusted_user_module_is_never_imported(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "trust_probe_mod.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef f():\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("RUNNER_TRUST", raising=False)
    with pytest.raises(ConfigError, match=r"model.fn=trust_probe_mod.f .*trust=trust_probe_mod .*RUNNER_TRUST="):
        resolve_trusted("trust_probe_mod.f", trusted_roots(), "model.fn")
    assert not marker.exists() and "trust_probe_mod" not in sys.modules
    # trusted by the reader (trust=, or the environment): it is imported and resolved
    assert "trust_probe_mod" in trusted_roots("trust_probe_mod, other")
    monkeypatch.setenv("RUNNER_TRUST", "elsewhere,trust_probe_mod")
    fn = resolve_trusted("trust_probe_mod.f", trusted_roots(), "model.fn")
    assert fn.__name__ == "f" and marker.exists()
    monkeypatch.delitem(sys.modules, "trust_probe_mod")


# --- check_stored_config -----------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [
    [], ["model=bmm", "data=digits_binary"], ["model=coin", "guide=manual", "optim=adam_cosine"],
    ["model=gaussian2d", "guide=automvn", "optim=lbfgs"], ["model=multimodal", "guide=mixture", "optim=sgd"],
    ["model=gmm", "inference=nuts", "optim=adamw"], ["model=gmm", "inference=em"],
    ["model=fn", "model.fn=runner.data.values", "data=json", "data.path=x.json", "guide=autoiaf"],
    ["guide=autolowrank", "data=csv", "data.path=x.csv"], ["guide=autolaplace", "data=npz", "data.path=x.npz"],
    ["model=bmm", "data=mnist", "data.path=."], ["data=file", "data.path=x.csv"],
], ids=lambda o: " ".join(o) or "defaults")
def test_every_built_in_config_passes_the_strict_rule(overrides):
    """The config as a run stores it (resolved): every `_target_` is runner's own, and the check
    reads each of them: the same config with any one of its targets (or a function model's `fn`)
    swapped for os.system is refused, naming that key."""
    import copy

    from runner.api import compose

    cfg, _ = compose(overrides)
    stored = OmegaConf.to_container(OmegaConf.create(OmegaConf.to_yaml(cfg, resolve=True)))
    check_stored_config(OmegaConf.create(stored), trusted_roots())

    def places(node, path=()):  # every (path, key) of a _target_, and fn beside a function model's
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            if k == "_target_" or (k == "fn" and node.get("_target_") == "runner.models.function.FunctionModel"):
                yield path, k
            yield from places(v, (*path, k))

    found = list(places(stored))
    assert {p[0] for p, _ in found if p} >= {"model", "guide", "optim", "loss", "inference", "tracking"}
    for path, key in found:
        bad = copy.deepcopy(stored)
        node = bad
        for k in path:
            node = node[k]
        node[key] = "os.system"
        name = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in (*path, key)).lstrip(".")
        with pytest.raises(ConfigError, match="'os' is not runner") as e:
            check_stored_config(OmegaConf.create(bad), trusted_roots())
        assert str(e.value).startswith(f"{name}=os.system in a stored config is not trusted"), (name, str(e.value))


@pytest.mark.parametrize("yaml,says", [
    ('data: "${oc.create:{_target_: os.system, _args_: [touch m]}}"', "calls the resolver 'oc.create'"),
    ("data: {_target_: runner.data.values, values: '${oc.decode:\"[1]\"}'}", "resolver 'oc.decode'"),
    ("hydra: {callbacks: {x: {_target_: os.system}}}", "hydra.callbacks.x._target_=os.system"),
    ("a: [1, {_target_: os.system}]", "a[1]._target_=os.system"),
    ("a: {_target_: '${b}'}\nb: runner.data.values", "not a dotted path"),
    ("model: {_target_: runner.models.function.FunctionModel, fn: os.system}", "model.fn=os.system"),
    ("model: {_target_: runner.models.function.FunctionModel, _args_: [os.system]}", "model._args_[0]=os.system"),
    ("model: {_target_: runner.models.function.FunctionModel, fn: {_target_: runner.data.values}}",
     "model.fn={'_target_'"),
    ("data: {_target_: runner.models.function.load_function, path: os.system}", "data.path=os.system"),
    ("data: {_target_: runner.models.function.load_function, _args_: '${x}'}\nx: [os.system]", "is not a list"),
])
def test_stored_config_bypasses_are_refused(yaml, says):
    with pytest.raises(ConfigError) as e:
        check_stored_config(OmegaConf.create(yaml), trusted_roots())
    assert says in str(e.value) and len(str(e.value).splitlines()) == 1


def test_references_and_oc_env_are_left_as_they_are(monkeypatch):
    """A reference to the config's own key and ${oc.env:...} pass, and the check resolves nothing:
    the nodes are still interpolations afterwards, and resolve as before."""
    monkeypatch.setenv("HOME", "/home/someone")
    text = "model: {_target_: runner.models.gmm.GMM, K: '${k}'}\nk: 2\nhome: '${oc.env:HOME}'"
    cfg = OmegaConf.create(text)
    assert check_stored_config(cfg, trusted_roots()) is None
    assert OmegaConf.to_yaml(cfg) == OmegaConf.to_yaml(OmegaConf.create(text))
    assert cfg.model._get_node("K")._is_interpolation() and cfg._get_node("home")._is_interpolation()
    assert (cfg.model.K, cfg.home) == (2, "/home/someone")
    # the same reference to a key that holds a target is checked where that key is
    with pytest.raises(ConfigError, match=r"^k\._target_=os\.system in a stored config is not trusted"):
        check_stored_config(OmegaConf.create(text.replace("k: 2", "k: {_target_: os.system}")), trusted_roots())
