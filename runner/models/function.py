"""`model=fn model.fn=mymodels.eight_schools`: a user's plain NumPyro function is a model.

No subclassing: what the runner needs is read from the function's signature and its trace.
- Data: named arrays (data=json, npz, csv) reach the function as keyword arguments by parameter
  name; keys it does not take are left out (unless it has **kwargs); Python scalars (sizes such as
  N or J) are bound as constants, so they can size plates; arrays are traced. Unnamed data (one
  array, e.g. data=file) goes to the first parameter.
- Sites: latent, observed, deterministic and discrete sites come from a trace of the function.
  Discrete latent sites are marked for parallel enumeration (config_enumerate) when the
  function has not marked them itself, so TraceEnum_ELBO sums them out.
- Optional extras, as attributes of the function (runner.model_extras attaches them):
  `init_values(key, **data) -> dict` (per-restart initial values), `figure(fig, samples, data)`,
  and EM's `em_init`, `em_log_joint`, `em_m_step`, `em_params` (see runner/models/base.py).
"""
from __future__ import annotations

import inspect
import math
import sys

from runner.errors import ConfigError, describe
from runner.models.base import Model

EM_HOOKS = ("em_init", "em_log_joint", "em_m_step", "em_params")


def load_function(path):
    """The callable at dotted `path` (or `path` itself when it is callable). A failing import
    names the module and keeps the original error's last line."""
    if callable(path):
        return path
    if not isinstance(path, str) or "." not in path:
        raise ConfigError(f"model.fn must be a dotted path such as mymodels.eight_schools, got {path!r}")
    import importlib

    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise ConfigError(f"model.fn={path}: no module named {e.name!r} (run from the folder that "
                              "holds it, or install it)") from None
        raise ConfigError(f"model.fn={path}: importing {module_name} failed: {describe(e)}") from None
    except Exception as e:
        raise ConfigError(f"model.fn={path}: importing {module_name} failed: {describe(e)}") from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise ConfigError(f"model.fn={path}: module {module_name} has no {attr!r}")
    if not callable(fn):
        raise ConfigError(f"model.fn={path} is not a function")
    return fn


def discrete(sites: dict, observed=frozenset()) -> tuple[bool, bool]:
    """(has discrete latent sites it did not mark for enumeration, has marked ones). Sites in
    `observed` (observed by the fit, left out of new data) are drawn, not enumerated."""
    latent = [s for s in sites.values() if s["type"] == "sample" and not s["is_observed"]
              and s["name"] not in observed]
    marked = [s for s in latent if (s.get("infer") or {}).get("enumerate") == "parallel"]
    unmarked = [s for s in latent if s not in marked and s["fn"].support.is_discrete]
    return bool(unmarked), bool(marked)


class FunctionModel(Model):
    """A plain NumPyro function as a runner model (see the module docstring)."""

    def __init__(self, fn, name: str | None = None):
        self.fn_path = fn if isinstance(fn, str) else f"{fn.__module__}.{fn.__qualname__}"
        self.fn = load_function(fn)
        self.name = name or getattr(self.fn, "__name__", "model")
        self.constants: dict = {}  # Python scalars of the data, bound at `bind`
        self.arrays: dict = {}  # the data's arrays, bound at `bind`
        self.concrete = False  # the model computes with its data's values (see _trace)
        self._jax: dict = {}  # name -> (a NumPy array of the data, its JAX copy)
        self._enumerate = self._marked = False
        try:
            self.signature = inspect.signature(self.fn)
        except (TypeError, ValueError):
            raise ConfigError(f"model.fn={self.fn_path}: cannot read the function's parameters") from None
        params = self.signature.parameters.values()
        self.takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
        self.names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        self.required = [p.name for p in params if p.default is p.empty
                         and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        self.needs_data = bool(self.required)

    # --- data -----------------------------------------------------------------------------
    def bind(self, data, observed=(), fitting: bool = True):
        """The data as the fit passes it: arrays the function takes, by name; its Python scalars
        are kept as constants of the model. Refuses data that misses a required parameter."""
        if data is not None and not isinstance(data, dict):  # one unnamed array: the first parameter
            if not self.names:
                raise ConfigError(f"model '{self.name}' takes no arguments, but data was given: use data=none")
            data = {self.names[0]: data}
        data = dict(data or {})
        kept = {k: v for k, v in data.items() if self.takes_any or k in self.names}
        from runner.data import Unusable

        bad = [v for v in kept.values() if isinstance(v, Unusable)]
        if bad:
            raise ConfigError(bad[0].message)
        missing = [n for n in self.required if n not in kept]
        if missing:
            have = ", ".join(sorted(data)) or "none"
            raise ConfigError(f"model '{self.name}' needs data for its parameters {missing} (the data "
                              f"has: {have}): choose data=json|npz|csv with data.path=...")
        dropped = sorted(set(data) - set(kept))
        unfilled = [n for n in self.names if n not in kept and n not in self.required]
        if dropped and unfilled:
            import sys

            print(f"runner: note: model '{self.name}' does not take data {dropped}, and its parameters "
                  f"{unfilled} get none (their defaults): check the names if that is not meant", file=sys.stderr)
        self.constants = {k: v for k, v in kept.items() if not hasattr(v, "shape")}
        for k, v in self.constants.items():
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"data {k!r} is {v}: model '{self.name}' needs a finite number")
        self.arrays = {k: v for k, v in kept.items() if hasattr(v, "shape")}
        for k, v in self.arrays.items():  # their JAX copies made here, outside any trace (concrete values)
            self._as_jax(k, v)
        sites = self._trace(self.arrays or None)
        self._enumerate, self._marked = discrete(sites, set(observed))
        return self.arrays or None

    def check_data(self, data) -> None:
        """bind() checks the data; nothing more to check here."""

    def _call(self, data=None):
        if self.concrete:  # the model's own NumPy needs values: its data are constants of the program,
            data = self.arrays  # NumPy arrays (under a trace, int(np.max(x)) of a JAX array is traced too)
        elif data:  # as JAX arrays, as a NumPyro user passes them: `x.dot(beta)` of a NumPy x cannot take a tracer
            data = {k: self._as_jax(k, v) for k, v in data.items()}
        return self.fn(**self.constants, **(data or {}))

    def _as_jax(self, name: str, value):
        """A NumPy array of the data as a JAX array, made once per array (identity stays, for the
        checks that match a site's value to its data); anything else (a tracer, a number) as it is."""
        import numpy as np

        if type(value) is not np.ndarray:
            return value
        import jax
        import jax.numpy as jnp

        kept = self._jax.get(name)
        if kept is None or kept[0] is not value:
            kept = (value, jnp.asarray(value))
            if isinstance(kept[1], jax.core.Tracer):  # made inside a trace: not kept
                return kept[1]
            self._jax[name] = kept
        return kept[1]

    def __call__(self, data=None):
        if self._enumerate:
            from numpyro.contrib.funsor import config_enumerate

            return config_enumerate(self._call, default="parallel")(data)
        return self._call(data)

    def _trace(self, data) -> dict:
        """name -> site of one seeded trace on `data`, its observed values checked against the
        plates (runner.models.plates). Traced abstractly; a model whose own Python needs the data's
        values (`len(np.unique(dept))`, `int(np.max(y))`) is traced, and then fitted, with its data
        as concrete arrays, as plain NumPyro calls it."""
        import jax

        from runner.models import plates
        from runner.posterior import model_sites

        def check(trace, traced):
            stand_ins = {k: (v, self._as_jax(k, v), (traced or {}).get(k)) for k, v in self.arrays.items()}
            plates.check_observed(trace, stand_ins, self.name)

        needs_values = (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
                        jax.errors.TracerIntegerConversionError, jax.errors.TracerBoolConversionError)
        guarded = plates.whole_sizes(self._call, self.name, self.constants)
        for attempt in (0, 1):
            try:
                return model_sites(guarded, data, inspect=check)
            except ConfigError:
                raise
            except needs_values:
                if attempt or not self.arrays:
                    raise ConfigError(f"model '{self.name}' needs its data's values where JAX traces them, even "
                                      f"with its data given as values: {describe(sys.exc_info()[1])}") from None
                self.concrete = True
            except Exception as e:
                raise ConfigError(f"model '{self.name}' fails on this data: {describe(e)}"
                                  f"{plates.sizes(self.constants, self.arrays)}") from None

    @property
    def enumerated(self) -> bool:
        return self._enumerate or self._marked

    # --- extras: attributes of the function, when it has them ---------------------------------
    def init_values(self, key, data):
        hook = getattr(self.fn, "init_values", None)
        return hook(key, **self.constants, **(data or {})) if callable(hook) else None

    def figure(self, fig, samples, data):
        hook = getattr(self.fn, "figure", None)
        if callable(hook):
            return hook(fig, samples, data)
        return super().figure(fig, samples, data)

    @property
    def K(self):
        """EM's number of components: a `K` in the data (a constant), else the function's `K`."""
        return self.constants.get("K", getattr(self.fn, "K", None))

    def em_data(self, data):
        """EM works on one array: the data's only array."""
        if not isinstance(data, dict):
            return data
        if len(data) != 1:
            raise ConfigError(f"inference=em needs data with one array for model '{self.name}', got {sorted(data)}")
        return next(iter(data.values()))

    def __getattr__(self, name):
        """EM's hooks (runner.models.mixtures.EMFamily) are the function's own, where it has them
        (attached with runner.model_extras): a model without them is not an EM family."""
        if name in EM_HOOKS and "fn" in self.__dict__:
            hook = getattr(self.__dict__["fn"], name, None)
            if callable(hook):
                return hook
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def source_file(self) -> str | None:
        try:
            return inspect.getsourcefile(self.fn)
        except TypeError:
            return None


def model_extras(**extras):
    """Decorator attaching optional extras to a model function, e.g.
    `@model_extras(init_values=my_init, figure=my_figure)`."""
    unknown = sorted(set(extras) - {"init_values", "figure", *EM_HOOKS})
    if unknown:
        raise TypeError(f"unknown model extras {unknown}")

    def attach(fn):
        for k, v in extras.items():
            setattr(fn, k, v)
        return fn

    return attach
