"""Traced programs kept between commands: a repeated run of a built-in model reads the program an
earlier command traced and lowered (jax.export's serialized StableHLO) instead of tracing its fit
again, then compiles it, which XLA's persistent cache (jax.cache_dir) answers. The trace and the
lowering are most of what a small fit costs after JAX's import (~0.5 s of the coin's command, ~1 s
of the GMM tutorial's; benchmarks/fixed_price.py), and XLA's cache only skips what comes after them.
Where XLA compiled the program for the run that kept it, the compiled program is kept too
(jax.experimental.serialize_executable) and a later run loads it as it is: nothing lowered, no
cache key hashed (~45 ms of the coin's command, ~90 ms of the GMM tutorial's). An executable that
XLA's own cache loaded is never kept (serialized again it holds no CPU code and fails when run):
that program is compiled from its StableHLO on every run, as before.

A kept program is used only where everything that went into its trace is in its key, so a changed
input never runs an old program:
- the config as composed, resolved (every key but those that never reach a fit's program: the
  seed, which enters as the programs' PRNG-key arguments, and the run's tracking, progress,
  timing, checkpoint and resume settings), and only where every `_target_` in it resolves to
  runner's, NumPyro's, Optax's or JAX's own code (runner.trust's check of a stored config, with
  those packages alone trusted; a function model's function is held to it too): a user's model,
  guide, optimizer or data loader is their code, not in the key, so their fit is traced every time;
- the data's values (sha256: a model that computes with its data makes them constants);
- the code: every source file of the runner package, the versions of Python, JAX, jaxlib,
  NumPyro, Optax, jaxopt (optim=lbfgs), NumPy, ml_dtypes, funsor and SciPy;
- JAX's settings (jax.config: x64, the PRNG, debug flags), the JAX_* and XLA_* environment
  variables, and the device;
- the program's name and its arguments' tree, shapes, dtypes and layouts.
The fit's programs (SVI's prepare, advance and finish, EM's) and those of its files (the
log-likelihood of inference_data.nc, the assignments) are kept. They are used only while the
experiment is the one `build` made from that config (dataclasses.replace drops it), its model, data
and method the objects build made, with the settings they had then (a notebook that swaps their
parts or edits their numbers gets a fresh trace); never for a fused sweep's group (its
numbers are not in its jobs' configs) nor on several devices (the restarts' layout across them is
decided in the trace).

A kept program is run the same way on the run that keeps it and on every later one (the
exported program inside a jit), so both give the same numbers. The files live in
<jax.cache_dir>/programs, beside XLA's compiled executables, and are trusted as those are (the
user's own cache: a kept program is run); jax.cache_dir=null keeps none. A file holds the
serialized StableHLO and the tree of the program's outputs, read by an unpickler that builds only
JAX's tree definitions and named tuples (no other object, no function is called); an executable
file also the machine's part of its key (the CPU's instruction set: XLA's code is the host's),
its pickle read by JAX's own unpickler held to the globals an executable names
(EXECUTABLE_GLOBALS), and checked on its first call. At most MAX_FILES, the least
recently used removed first; a file that cannot be read or compiled is traced
anew and replaced; a program jax.export cannot export is compiled as before and not kept. No
program is kept or read while a runner source file is newer than the process's import of runner.
What building an experiment learns by tracing (SVI's check of the guide) is kept the same way, under
the same key, as a small JSON file (`kept_fact`).
"""
from __future__ import annotations

import functools
import hashlib
import os
import pickle
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: bumped when what a file holds changes
FORMAT = "runner-program/1"  # and jax.export's own version inside
EXECUTABLE = "runner-executable/1"
MAX_FILES = 512  # a program's StableHLO and its executable are two
#: top-level config keys that never reach a fit's program
UNTRACED = ("seed", "tracking", "progress", "timing", "checkpoint", "resume", "rerun")
#: the packages whose code may be traced into a kept program (their versions are in the key)
TRACED_PACKAGES = ("runner", "numpyro", "optax", "jax")
VERSIONED = ("jax", "jaxlib", "numpyro", "optax", "jaxopt", "numpy", "ml_dtypes", "funsor", "scipy")
#: jax.config values that do not change a traced program (where JAX keeps its own caches)
JAX_UNTRACED = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                "jax_persistent_cache_min_entry_size_bytes", "jax_compilation_cache_max_size")


def _sha(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode())
        h.update(b"\0")
    return h.hexdigest()


def config_key(cfg, model) -> str | None:
    """The config's part of the key (None: the config names code outside TRACED_PACKAGES, a
    function model's function included, so its fit is traced every time)."""
    from omegaconf import OmegaConf

    from runner.errors import ConfigError
    from runner.trust import check_stored_config

    if type(model).__module__.split(".")[0] != "runner":
        return None  # a model that is not runner's (a function model's function: held to the rule below)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    try:  # the targets as resolved (the config's own interpolations are the user's to use)
        check_stored_config(OmegaConf.create(resolved), frozenset(TRACED_PACKAGES))
    except ConfigError:
        return None
    kept = {k: v for k, v in resolved.items() if k not in UNTRACED}
    return _sha(FORMAT, repr(sorted(kept.items(), key=lambda kv: str(kv[0]))))


def data_digest(data) -> str | None:
    """sha256 of the data's values, dtypes, shapes and names (numpy arrays, a dict of them, None);
    None for data that are not plain arrays (objects)."""
    import jax

    h = hashlib.sha256()
    leaves, tree = jax.tree.flatten(data)
    h.update(str(tree).encode())
    for leaf in leaves:
        a = np.ascontiguousarray(np.asarray(leaf))
        if a.dtype.hasobject:
            return None
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B") if a.size else b"")
    return h.hexdigest()


PLAIN = (bool, int, float, str, type(None))


def settings(obj) -> dict:
    """What a notebook may have changed on a model or method since `build`: its own attributes,
    plain ones (numbers, strings, bools, None, tuples of them) as their repr, any other as the
    object itself, compared by identity (a swapped loss, guide or optimizer is seen; not an edit
    inside one: NumPyro sets a loss's max_plate_nesting on its first use). Attributes added later
    (a model's caches of its programs) are not its settings."""
    found = {}
    for name, value in vars(obj).items() if hasattr(obj, "__dict__") else ():
        flat = isinstance(value, (tuple, frozenset)) and all(isinstance(v, PLAIN) for v in value)
        if isinstance(value, PLAIN) or flat:
            found[name] = repr(sorted(value, key=repr) if isinstance(value, frozenset) else value)
        else:
            found[name] = value
    return found


def unchanged(obj, then: dict) -> bool:
    """obj's settings that were `then` (settings() at build) are still those."""
    now = settings(obj)
    return all(name in now and (now[name] is was or isinstance(was, str) and isinstance(now[name], str)
                                and now[name] == was) for name, was in then.items())


@dataclass(frozen=True)
class Built:
    """What `build` made for a config whose programs may be kept: the config's key and the
    objects (with their settings then, which hold the parts they name) the key describes."""
    key: str
    model: object
    data: object
    inference: object
    model_settings: dict
    inference_settings: dict

    @classmethod
    def of(cls, key: str | None, model, data, inference) -> "Built | None":
        if key is None:
            return None
        return cls(key, model, data, inference, settings(model), settings(inference))

    def holds(self, exp) -> bool:
        """exp's model, data and method are still these, unchanged."""
        return (exp.model is self.model and exp.data is self.data and exp.inference is self.inference
                and unchanged(exp.model, self.model_settings) and unchanged(exp.inference, self.inference_settings))


@functools.cache
def _versions() -> tuple:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in VERSIONED:
        try:
            found.append((name, version(name)))
        except PackageNotFoundError:
            found.append((name, None))
    return sys.version, tuple(found)


def _code_key() -> str | None:
    """runner's sources and the traced libraries' versions; None where a source changed after
    this process imported runner (the code running is not the code on disk)."""
    imported_at = sys.modules["runner"].IMPORTED_AT  # the package, imported before any of its modules
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        if path.stat().st_mtime > imported_at:
            return None
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return _sha(h.hexdigest(), _versions())


def _environment_key() -> str:
    """JAX's settings, its environment variables and the devices (may change within a process)."""
    import jax

    values = sorted((k, repr(v)) for k, v in jax.config.values.items() if k not in JAX_UNTRACED)
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith(("JAX_", "XLA_")))
    devices = [(d.platform, d.device_kind, d.id, d.process_index) for d in jax.devices()]
    return _sha(values, env, devices, jax.process_count())


def signature(args) -> str:
    """The arguments' tree, shapes, dtypes, weak types and layouts (what a compiled program takes)."""
    import jax

    leaves, tree = jax.tree.flatten(args)
    described = []
    for x in leaves:
        if hasattr(x, "shape") and hasattr(x, "dtype"):
            described.append((tuple(x.shape), str(x.dtype), bool(getattr(x, "weak_type", False)),
                              str(getattr(x, "sharding", None))))
        else:
            described.append(type(x).__name__)  # a Python scalar: a weakly typed argument
    return _sha(str(tree), described)


@dataclass(frozen=True)
class ProgramCache:
    """The kept programs of one experiment: `compiled(name, jitted, *args)` is
    `jitted.lower(*args).compile()`, from the program an earlier command traced for the same key
    where there is one."""
    folder: Path
    key: str

    def path(self, name: str, args) -> Path:
        return self.folder / f"{_sha(self.key, name, signature(args))}.program"

    def compiled(self, name: str, jitted, *args, donate_argnums=()):
        """`name`'s program: its kept executable where there is one (nothing traced, lowered or
        compiled; checked on its first call); else its kept program read and lowered, or traced,
        kept and lowered; compiled (XLA's persistent cache answers a program compiled before) and
        the executable kept. A program jax.export cannot export, or a kept one that cannot be
        compiled, is compiled as it is (and not kept)."""
        path = self.path(name, args)
        machine = _machine()
        executable = None if machine is None else path.with_name(
            f"{_sha(path.name, tuple(donate_argnums), machine)}.executable")

        def from_program(keep: bool):
            found = _load(path)
            try:
                if found is None:
                    found = _export(jitted, args)
                    _save(path, *found)
                result, compiled_here = _compile(*found, args, donate_argnums)
            except Exception:
                _forget(path)
                return jitted.lower(*args).compile()
            if keep and compiled_here and executable is not None:  # (not one XLA's cache loaded: no CPU code)
                _save_executable(executable, result)
            return result

        loaded = None if executable is None else _load_executable(executable)
        if loaded is not None:
            return _Checked(loaded, executable, lambda: from_program(keep=False))
        return from_program(keep=True)


class _Checked:
    """A kept executable, checked on its first call: one that fails when run (a file XLA could load
    but not run: "Function ... not found") is forgotten and the program compiled from its StableHLO
    instead; that call is made again with the same arguments (where the failed call had consumed a
    donated argument, it raises, saying so: that run fails, the next compiles). Otherwise it is the
    jax.stages.Compiled it holds."""

    def __init__(self, compiled, path: Path, fallback):
        self._compiled, self._path, self._fallback, self._checked = compiled, path, fallback, False

    def __getattr__(self, name):
        return getattr(self._compiled, name)

    def __call__(self, *args):
        if self._checked:
            return self._compiled(*args)
        import jax

        self._checked = True
        try:
            return jax.block_until_ready(self._compiled(*args))
        except jax.errors.JaxRuntimeError as failed:
            _forget(self._path)
            self._compiled = self._fallback()
            try:
                return self._compiled(*args)
            except RuntimeError as e:
                if "deleted" not in str(e):
                    raise
                raise RuntimeError(f"a kept compiled program could not run ({str(failed)[:200]}) and was removed "
                                   "from the compile cache: the next run compiles it") from failed


def for_experiment(exp) -> ProgramCache | None:
    """The experiment's kept programs, or None (no jax.cache_dir, a user's code in its config, a
    model, data or method changed since build, several devices)."""
    built = exp.built
    if not exp.cache_dir or built is None or not built.holds(exp):
        return None
    key = full_key(built.key, exp.data)
    return None if key is None else ProgramCache(Path(exp.cache_dir) / "programs", key)


def full_key(config: str | None, data) -> str | None:
    """The key of what a config's trace gives (its programs, its facts): the config's part
    (config_key), the data's values, runner's code and the versions, JAX's settings and device;
    None where nothing is kept (a user's code, object data, a source newer than the running code,
    jax_disable_jit, several devices)."""
    import jax

    if config is None or jax.config.jax_disable_jit or jax.device_count() > 1:
        return None
    data, code = data_digest(data), _code_key()
    if data is None or code is None:
        return None
    return _sha(config, data, code, _environment_key())


def kept_fact(cache_dir: str | None, cfg, model, data, name: str, compute):
    """`compute()` (a JSON value: what building an experiment learns by tracing, e.g. SVI's check of
    the guide against the model, one abstract trace of both, 0.05-0.15 s), kept beside the programs
    under the same key as they are (config, data, code, versions, JAX's settings and device) plus
    `name`: a config built before reads it instead of tracing. Only where its programs would be
    kept: never for a user's code. An error from compute() is raised and nothing is kept."""
    import json

    key = full_key(config_key(cfg, model), data) if cache_dir else None
    if key is None:
        return compute()
    path = Path(cache_dir) / "programs" / f"{_sha(key, FORMAT, 'fact', name)}.fact"
    try:
        found = json.loads(path.read_text())
        if isinstance(found, dict) and found.get("name") == name and "value" in found:
            return found["value"]
    except (OSError, ValueError):
        pass
    value = compute()
    try:
        blob = json.dumps({"name": name, "value": value}).encode()
    except (TypeError, ValueError):  # not JSON: computed every time
        return value
    _keep(path, blob)
    return value


def compiled(cache: ProgramCache | None, name: str, jitted, *args, donate_argnums=()):
    """`jitted.lower(*args).compile()`, from `cache`'s kept program where there is one (None:
    traced as it is)."""
    if cache is None:
        return jitted.lower(*args).compile()
    return cache.compiled(name, jitted, *args, donate_argnums=donate_argnums)


def on_device(tree):
    """`tree`'s leaves as JAX arrays, as jnp.asarray makes them (the dtype JAX's settings give, not
    weakly typed, on the default device, uncommitted, a buffer of its own); a NumPy array or scalar
    by a plain transfer of a copy (on CPU a transfer may share the array's memory, which its owner
    may change): jnp.asarray copies it with a small program of its own, whose first use in a
    process lowers it and imports MLIR's dialects (~30 ms of a run whose own programs are kept
    compiled)."""
    import jax
    import jax.numpy as jnp

    return jax.tree.map(lambda x: jax.device_put(np.array(x)) if isinstance(x, (np.ndarray, np.generic))
                        else jnp.asarray(x), tree)


def run(cache: ProgramCache | None, name: str, jitted, *args):
    """`jitted(*args)`, its program read from `cache` where one is kept (None: jitted as it is,
    with the jit's own in-process cache)."""
    if cache is None:
        return jitted(*args)
    return cache.compiled(name, jitted, *args)(*args)


#: one compile at a time lowers the persistent cache's floor (a process-wide setting)
_FLOOR = threading.Lock()


def _compile(exported, out_tree, args, donate_argnums):
    """(the kept program, inside a jit that takes and returns `args`' trees, compiled; whether XLA
    compiled it just now). XLA's persistent cache keeps it however fast it compiles (a small fit's
    program compiles in less than runner's jax_persistent_cache_min_compile_time_secs, and every
    run would). Compiled just now: JAX asked XLA's persistent cache and did not find it there (an
    executable that cache loaded, or JAX's in-memory cache gave, may hold no code to serialize)."""
    import jax

    def call(*tree_args):
        return jax.tree.unflatten(out_tree, exported.call(*jax.tree.leaves(tree_args)))

    lowered = jax.jit(call, donate_argnums=donate_argnums).lower(*args)
    with _FLOOR:
        floor = jax.config.jax_persistent_cache_min_compile_time_secs
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        before = _cache_events()
        try:
            compiled = lowered.compile()
        finally:
            jax.config.update("jax_persistent_cache_min_compile_time_secs", floor)
        asked, found = (after - was for after, was in zip(_cache_events(), before))
        return compiled, asked == 1 and found == 0


_EVENTS = threading.local()
_ASKED, _FOUND = "/jax/compilation_cache/compile_requests_use_cache", "/jax/compilation_cache/cache_hits"


def _cache_events() -> tuple[int, int]:
    """(how many compiles this thread has asked XLA's persistent cache for, how many it found
    there), from jax.monitoring's events, counted from the first call on."""
    _listen()
    return getattr(_EVENTS, _ASKED, 0), getattr(_EVENTS, _FOUND, 0)


@functools.cache
def _listen() -> None:
    import jax

    def heard(event: str, **kwargs) -> None:
        if event in (_ASKED, _FOUND):
            setattr(_EVENTS, event, getattr(_EVENTS, event, 0) + 1)

    jax.monitoring.register_event_listener(heard)


def _forget(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _export(jitted, args):
    """(jax.export's Exported of `jitted` on the flat arguments, the tree of its outputs)."""
    import jax

    leaves, in_tree = jax.tree.flatten(args)
    out_tree = []

    def flat(*flat_args):
        out, tree = jax.tree.flatten(jitted(*jax.tree.unflatten(in_tree, flat_args)))
        out_tree.append(tree)
        return out

    exported = jax.export.export(jax.jit(flat))(*leaves)
    return exported, out_tree[-1]


class _Trees(pickle.Unpickler):
    """Builds a tree definition and nothing else: JAX's PyTreeDef and registries, and the named
    tuples of runner, Optax, NumPyro, JAX and jaxopt (the nodes of a fit's outputs)."""
    NAMED_TUPLES = ("runner", "optax", "numpyro", "jax", "jaxopt")

    def find_class(self, module, name):
        if (module, name) in (("jaxlib._jax.pytree", "PyTreeDef"), ("jax._src.tree_util", "default_registry"),
                              ("jax._src.tree_util", "tracing_registry")):  # an executable's arguments' tree
            return super().find_class(module, name)
        if module.split(".")[0] in self.NAMED_TUPLES:
            found = super().find_class(module, name)
            if isinstance(found, type) and issubclass(found, tuple) and hasattr(found, "_fields"):
                return found
        raise pickle.UnpicklingError(f"{module}.{name} is not a tree node")


def _load(path: Path):
    """(Exported, output tree) kept in `path`, or None (none there, or a file that cannot be read)."""
    import io

    import jax

    try:
        blob = path.read_bytes()
    except OSError:
        return None
    try:
        fmt, serialized, out_tree = _Trees(io.BytesIO(blob)).load()
        if fmt != FORMAT or not isinstance(out_tree, jax.tree_util.PyTreeDef):
            return None
        exported = jax.export.deserialize(bytearray(serialized))
    except Exception:  # a torn, foreign or stale file: traced anew and replaced
        return None
    try:
        os.utime(path)  # recently used
    except OSError:
        pass
    return exported, out_tree


@functools.cache
def _machine() -> str | None:
    """What an executable is native code for beyond the device's name: the backend's version and
    the CPU's instruction set (XLA's CPU code uses the host's: a cache folder shared across
    machines must not run one machine's code on another), read from Linux's /proc/cpuinfo; None
    elsewhere (no executable kept: its programs are compiled from their StableHLO)."""
    import platform

    import jax

    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith(("flags", "Features"))), None)
    except OSError:
        return None
    if flags is None:
        return None
    return _sha(platform.machine(), jax.devices()[0].client.platform_version, flags)


#: every global a serialized executable's pickle names (jax.experimental.serialize_executable, JAX
#: 0.10: the 195 executables of `make test` and the benchmarks name these 14); anything else is refused
EXECUTABLE_GLOBALS = frozenset({
    ("jax", "P"), ("jax._src.core", "ManualAxisType"), ("jax._src.core", "MemorySpace"),
    ("jax._src.core", "ShapedArray"), ("jax._src.interpreters.pxla", "AllArgsInfo"),
    ("jax._src.interpreters.pxla", "UnloadedMeshExecutable"), ("jax._src.layout", "Layout"),
    ("jax._src.linear_util", "DebugInfo"), ("jax._src.mesh", "AbstractMesh"),
    ("jax._src.named_sharding", "_unpickle_named_sharding"),
    ("jax._src.sharding_impls", "_unpickle_single_device_sharding"), ("jax._src.stages", "ArgInfo"),
    ("jaxlib._jax", "DeviceList"), ("numpy", "dtype"),
})


@functools.cache
def _executables(dry: bool = False):
    """JAX's unpickler of a serialized executable (jax.experimental.serialize_executable) held to
    EXECUTABLE_GLOBALS, checked before anything is imported or looked up: a kept executable is
    native code that the user's own cache runs (as XLA's persistent cache does), but its pickle
    builds JAX's description of it and calls nothing else (JAX defines functions that load pickles
    or plugins: none is reachable). `dry`: the executable itself not loaded (the globals checked)."""
    from jax.experimental.serialize_executable import _JaxPjrtUnpickler

    class Executables(_JaxPjrtUnpickler):
        def find_class(self, module, name):
            if (module, name) not in EXECUTABLE_GLOBALS:
                raise pickle.UnpicklingError(f"{module}.{name} is not part of an executable")
            return super().find_class(module, name)

        def persistent_load(self, pid):
            return None if dry and pid[0] == "exec" else super().persistent_load(pid)

    return Executables


def _load_executable(path: Path):
    """The compiled program kept in `path` (jax.stages.Compiled), or None (none there, or a file
    that cannot be read or loaded: compiled anew and replaced)."""
    import io

    import jax

    try:
        blob = path.read_bytes()
    except OSError:
        return None
    try:
        fmt, payload, in_tree, out_tree = _Trees(io.BytesIO(blob)).load()
        if fmt != EXECUTABLE or not all(isinstance(t, jax.tree_util.PyTreeDef) for t in (in_tree, out_tree)):
            raise ValueError("not a kept executable")
        backend = jax.devices()[0].client
        unloaded, args_info_flat, no_kwargs = _executables()(io.BytesIO(payload), backend).load()
        loaded = jax.stages.Compiled(unloaded.load(), [], in_tree.unflatten(args_info_flat), out_tree,
                                     no_kwargs=no_kwargs)
    except Exception:  # a torn, foreign or stale file: removed (kept anew where XLA compiles the program)
        _forget(path)
        return None
    try:
        os.utime(path)  # recently used
    except OSError:
        pass
    return loaded


def _save_executable(path: Path, compiled) -> None:
    """Keep the compiled program in `path`; nothing where JAX cannot serialize it or it would not
    load back (a tree node _Trees does not build, a global outside EXECUTABLE_GLOBALS)."""
    import io

    import jax

    try:
        from jax.experimental.serialize_executable import serialize

        payload, in_tree, out_tree = serialize(compiled)
        blob = pickle.dumps((EXECUTABLE, payload, in_tree, out_tree))
        _Trees(io.BytesIO(blob)).load()
        _executables(dry=True)(io.BytesIO(payload), jax.devices()[0].client).load()
    except Exception:
        return
    _keep(path, blob)


def _save(path: Path, exported, out_tree) -> None:
    """Keep the program in `path` (written whole, then renamed); nothing where it cannot be
    serialized or the folder cannot be written (the run goes on)."""
    try:
        blob = pickle.dumps((FORMAT, bytes(exported.serialize()), out_tree))
    except Exception:  # a program JAX cannot serialize: traced every time
        return
    _keep(path, blob)


def _keep(path: Path, blob: bytes) -> None:
    """`blob` into `path`, written whole then renamed (a reader never sees half a file), and the
    folder pruned; nothing where the folder cannot be written (a full disk, a folder not ours:
    the run goes on without it)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(blob)
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return
    _prune(path.parent)


def _prune(folder: Path) -> None:
    """At most MAX_FILES programs: the least recently used go first; and no temporary file of a
    process killed while writing one (older than an hour)."""
    import time

    try:
        files = sorted([*folder.glob("*.program"), *folder.glob("*.executable"), *folder.glob("*.fact")],
                       key=lambda p: p.stat().st_mtime)
        stale = [p for p in folder.glob("*.tmp") if p.stat().st_mtime < time.time() - 3600]
    except OSError:
        return
    for old in files[:max(0, len(files) - MAX_FILES)] + stale:
        try:
            old.unlink()
        except OSError:
            pass
