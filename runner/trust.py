"""What a config read back from a store may name: the trust boundary of runner.predict and the
pyfunc model.

The command a user types and the config files they point at are their own code: any `_target_`
or `model.fn` there is used, as in Hydra. A config.yaml read back from a tracking store is data
(whoever can write the store's artifacts wrote it), so before anything in it is instantiated:

- every `_target_`, and the dotted path of a function model (`model.fn`, `load_function`'s
  `path`), must resolve to an object whose module (the resolved object's, not the string's) is
  one of the trusted packages: runner's own components (a public top-level class or function of
  runner.models, runner.guides, runner.data, runner.optim, runner.losses; in runner.inference and
  runner.tracking only inference-method and tracking-backend classes), a package registered
  through Hydra's plugin mechanism (a SearchPathPlugin adding `pkg://<package>...`), or one the
  reader names (`trust=mymodels` for runner.predict, or RUNNER_TRUST=mymodels);
- the string's first component is checked before anything is imported (importing a module runs
  its code), then it is resolved as Hydra does (`_locate`) and the resolved object checked;
- interpolations may only reference the config's own keys or call `${oc.env:...}` (a resolver
  such as `${oc.create:...}` would build a node, `_target_` included, that no check saw).

Anything else is one ConfigError line naming the key, the target and how to trust it.
"""
from __future__ import annotations

import os
import re
from types import ModuleType

from runner.errors import ConfigError

ENV = "RUNNER_TRUST"
#: within runner, a stored config may name only these (the component modules the configs use;
#: never the entry points, e.g. runner.api or runner.app, which compose and run new configs)
RUNNER_COMPONENTS = ("models", "guides", "data", "optim", "losses", "inference", "tracking")
#: in these components only the classes of one kind (settings holders, nothing run on building)
KIND_ONLY = {"inference": ("runner.inference.base", "Method"), "tracking": ("runner.tracking.base", "Tracking")}
#: targets that import the dotted path they are given: that path is held to the same rule
FUNCTION_MODEL = "runner.models.function.FunctionModel"
LOAD_FUNCTION = "runner.models.function.load_function"
PATH_KEYS = ("fn", "path")
SAFE_RESOLVERS = ("oc.env",)  # returns a string, never a node
DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
HOW = "trust=<package> (runner.predict) or RUNNER_TRUST=<package>"


def _names(value) -> list[str]:
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(v).strip().split(".")[0] for v in items if str(v).strip()]


def _search_path():
    """A ConfigSearchPath (Hydra's public interface) that only records what a plugin adds."""
    from hydra.core.config_search_path import ConfigSearchPath, SearchPathElement

    class Recorded(ConfigSearchPath):
        def __init__(self):
            self.elements: list = []

        def get_path(self):
            return self.elements

        def append(self, provider, path, anchor=None):
            self.elements.append(SearchPathElement(provider, path))

        def prepend(self, provider, path, anchor=None):
            self.elements.insert(0, SearchPathElement(provider, path))

    return Recorded()


def plugin_roots() -> set[str]:
    """Top-level packages of the `pkg://` entries that installed Hydra SearchPathPlugins add
    (hydra's own excluded)."""
    from hydra.core.plugins import Plugins
    from hydra.plugins.search_path_plugin import SearchPathPlugin

    roots: set[str] = set()
    for plugin in Plugins.instance().discover(SearchPathPlugin):
        search_path = _search_path()
        try:
            plugin().manipulate_search_path(search_path)
        except Exception:  # a broken plugin registers nothing
            continue
        for element in search_path.get_path():
            path = element.path or ""
            if path.startswith("pkg://"):
                top = re.split(r"[./]", path[len("pkg://"):], maxsplit=1)[0]
                if top and top not in ("hydra", "hydra_plugins"):  # not every installed plugin's code
                    roots.add(top)
    return roots


def trusted_roots(extra=()) -> frozenset[str]:
    """runner, the packages registered through Hydra SearchPathPlugins, the names in `extra`
    (a comma-separated string or a list: `trust=` of runner.predict) and in $RUNNER_TRUST."""
    return frozenset({"runner", *plugin_roots(), *_names(extra), *_names(os.environ.get(ENV))})


def _module_of(obj) -> str | None:
    if isinstance(obj, ModuleType):
        return obj.__name__
    module = getattr(obj, "__module__", None)
    return module if isinstance(module, str) else None


def _shown(roots) -> str:
    return ", ".join(sorted(roots))


def resolve_trusted(path, roots, key: str = "_target_"):
    """The object at dotted `path`, resolved as Hydra resolves a `_target_`, if it is trusted;
    ConfigError (one line) otherwise, with nothing imported for an untrusted first component."""
    if not isinstance(path, str) or not DOTTED.fullmatch(path):
        raise ConfigError(f"{key}={path!r} in a stored config is not a dotted path (an interpolation "
                          "or another value): refused")
    parts = path.split(".")
    top = parts[0]
    if top not in roots:
        raise ConfigError(f"{key}={path} in a stored config is not trusted: '{top}' is not runner, a package "
                          f"registered as a Hydra plugin or one you trust (trusted: {_shown(roots)}); "
                          f"if you trust it: trust={top} (runner.predict) or {ENV}={top}")
    if top == "runner" and (len(parts) < 3 or parts[1] not in RUNNER_COMPONENTS):
        raise ConfigError(f"{key}={path} in a stored config is refused: within runner only the components "
                          f"{', '.join('runner.' + c for c in RUNNER_COMPONENTS)} may be named")
    try:
        obj = _located(path)
    except Exception as e:
        cause = e.__cause__ or e
        lines = [line for line in str(cause).strip().splitlines() if line.strip()]
        raise ConfigError(f"{key}={path} in a stored config cannot be resolved: "
                          f"{type(cause).__name__}: {lines[0] if lines else ''}".rstrip(": ")) from None
    module = _module_of(obj)
    where = module.split(".")[0] if module else None
    if where not in roots:
        raise ConfigError(f"{key}={path} in a stored config resolves to "
                          f"{module or 'an object of unknown module'}.{getattr(obj, '__name__', '?')}, outside the "
                          f"trusted packages ({_shown(roots)}): refused; to trust a package: {HOW}")
    if where == "runner":
        qualname = getattr(obj, "__qualname__", None)
        component = module.split(".")[1] if "." in module else ""
        if (component not in RUNNER_COMPONENTS or not callable(obj) or not isinstance(qualname, str)
                or "." in qualname or qualname.startswith("_")):
            raise ConfigError(f"{key}={path} in a stored config is refused: within runner only public top-level "
                              "classes and functions of its components may be named")
        if component in KIND_ONLY:
            import importlib

            base_module, base_name = KIND_ONLY[component]
            base = getattr(importlib.import_module(base_module), base_name)
            if not (isinstance(obj, type) and issubclass(obj, base)):
                raise ConfigError(f"{key}={path} in a stored config is refused: within runner.{component} only "
                                  f"{base_name} classes may be named")
    return obj


def _located(path: str):
    """The object at `path`, resolved as Hydra resolves a `_target_` (hydra.utils.get_object,
    without the error line it logs: the caller says it in one line)."""
    import logging

    from hydra.utils import get_object

    logger = logging.getLogger("hydra.utils")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        return get_object(path)
    finally:
        logger.setLevel(level)


def _qualified(obj) -> set[str]:
    """`module.qualname` of obj and, for a class, of each of its bases."""
    found = set()
    for o in getattr(obj, "__mro__", None) or (obj,):
        module, qualname = getattr(o, "__module__", None), getattr(o, "__qualname__", None)
        if isinstance(module, str) and isinstance(qualname, str):
            found.add(f"{module}.{qualname}")
    return found


def _check_interpolation(raw: str, key: str) -> None:
    """A stored value that is an interpolation may reference the config's own keys (checked where
    they are) and call only resolvers that return strings."""
    from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser as P
    from omegaconf.grammar_parser import parse

    try:
        tree = parse(raw, parser_rule="configValue")
    except Exception:
        raise ConfigError(f"{key}={raw!r} in a stored config is not a valid interpolation: refused") from None
    stack = [tree]
    while stack:
        ctx = stack.pop()
        if isinstance(ctx, P.InterpolationResolverContext):
            name = ctx.resolverName().getText()
            if name not in SAFE_RESOLVERS:
                raise ConfigError(f"{key}={raw} in a stored config calls the resolver '{name}': refused "
                                  f"(a stored config may use only {', '.join(SAFE_RESOLVERS)} and references "
                                  "to its own keys)")
        stack.extend(ctx.getChildren() if hasattr(ctx, "getChildren") else ())


def check_stored_config(cfg, roots, path: str = "") -> None:
    """Hold every `_target_` of a config read back from a store (hydra.callbacks and every other
    node included) and the dotted paths a function model imports to resolve_trusted's rule, and
    its interpolations to _check_interpolation's, without resolving anything."""
    from omegaconf import DictConfig, ListConfig

    node = cfg
    if node is None:
        return
    if node._is_interpolation():
        _check_interpolation(node._value(), path or "<root>")
        return
    if not isinstance(node, (DictConfig, ListConfig)) or node._is_none() or node._is_missing():
        return  # a plain value
    if isinstance(node, ListConfig):
        for i in range(len(node)):
            check_stored_config(node._get_node(i), roots, f"{path}[{i}]")
        return

    def join(key) -> str:
        return f"{path}.{key}" if path else str(key)

    keys = list(node.keys())
    obj = None
    if "_target_" in keys:
        target = node._get_node("_target_")
        obj = resolve_trusted(None if target is None else target._value(), roots, join("_target_"))
    for key in keys:
        if key != "_target_":
            check_stored_config(node._get_node(key), roots, join(key))
    if obj is not None and _qualified(obj) & {FUNCTION_MODEL, LOAD_FUNCTION}:
        # a function model imports its dotted path itself: that path is a target too
        for key in PATH_KEYS:
            if key in keys:
                child = node._get_node(key)
                resolve_trusted(None if child is None else child._value(), roots, join(key))
        args = node._get_node("_args_") if "_args_" in keys else None
        if args is not None and not args._is_none():  # the path may come first, positionally
            if not isinstance(args, ListConfig) or args._is_interpolation():
                raise ConfigError(f"{join('_args_')} in a stored config is not a list: refused")
            if len(args):
                first = args._get_node(0)
                resolve_trusted(first if isinstance(first, (DictConfig, ListConfig)) else first._value(), roots,
                                f"{join('_args_')}[0]")
