"""Traced programs kept between commands: a repeated run of a built-in model reads the program an
earlier command traced and lowered (jax.export's serialized StableHLO) instead of tracing its fit
again, then compiles it, which XLA's persistent cache (jax.cache_dir) answers. The trace and the
lowering are most of what a small fit costs after JAX's import (~0.5 s of the coin's command, ~1 s
of the GMM tutorial's; benchmarks/fixed_price.py), and XLA's cache only skips what comes after them.

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
log-likelihood of inference_data.nc, the assignments) are kept. It is used only while the experiment's model, data and method are the objects `build` made from
that config, with the plain settings they had then (a notebook that swaps or edits them gets a
fresh trace); never for a fused sweep's group (its numbers are not in its jobs' configs) nor on
several devices (the restarts' layout across them is decided in the trace).

A kept program is run the same way on the run that keeps it and on every later one (the
exported program inside a jit), so both give the same numbers. The files live in
<jax.cache_dir>/programs; jax.cache_dir=null keeps none. A file holds the serialized StableHLO
(data: no code is loaded from it) and the tree of the program's outputs, read by an unpickler
that builds only JAX's tree definitions and the named tuples of runner, Optax and NumPyro. At most
MAX_FILES, the least recently used removed first; a file that cannot be read is traced anew and
replaced.
"""
from __future__ import annotations

import functools
import hashlib
import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: bumped when what a file holds changes
FORMAT = "runner-program/1"  # and jax.export's own version inside
MAX_FILES = 256
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


def data_digest(data) -> str:
    """sha256 of the data's values, dtypes, shapes and names (numpy arrays, a dict of them, None)."""
    import jax

    h = hashlib.sha256()
    leaves, tree = jax.tree.flatten(data)
    h.update(str(tree).encode())
    for leaf in leaves:
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B") if a.size else b"")
    return h.hexdigest()


def settings(obj) -> tuple:
    """The plain settings of a model or method (its own attributes that are numbers, strings,
    bools, None or tuples of them): what a notebook may have changed since `build`."""
    plain = (bool, int, float, str, type(None))
    found = []
    for name, value in sorted(vars(obj).items()) if hasattr(obj, "__dict__") else ():
        flat = isinstance(value, (tuple, frozenset)) and all(isinstance(v, plain) for v in value)
        if isinstance(value, plain) or flat:
            found.append((name, repr(sorted(value, key=repr) if isinstance(value, frozenset) else value)))
        elif hasattr(value, "__dataclass_fields__") and not callable(value):
            found.append((name, repr(value)))
    return type(obj).__module__, type(obj).__qualname__, tuple(found)


@dataclass(frozen=True)
class Built:
    """What `build` made for a config whose programs may be kept: the config's key and the
    objects (with their settings then) the key describes."""
    key: str
    model: object
    data: object
    inference: object
    model_settings: tuple
    inference_settings: tuple

    @classmethod
    def of(cls, key: str | None, model, data, inference) -> "Built | None":
        if key is None:
            return None
        return cls(key, model, data, inference, settings(model), settings(inference))

    def holds(self, exp) -> bool:
        """exp's model, data and method are still these, unchanged."""
        return (exp.model is self.model and exp.data is self.data and exp.inference is self.inference
                and settings(exp.model) == self.model_settings and settings(exp.inference) == self.inference_settings)


@functools.cache
def _code_key() -> str:
    """runner's sources and the traced libraries' versions (the same for a whole process)."""
    from importlib.metadata import PackageNotFoundError, version

    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    versions = []
    for name in VERSIONED:
        try:
            versions.append((name, version(name)))
        except PackageNotFoundError:
            versions.append((name, None))
    return _sha(h.hexdigest(), sys.version, versions)


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
        """`name`'s program: read and lowered where kept, else traced, kept and lowered; compiled
        (XLA's persistent cache answers a program compiled before)."""
        import jax

        path = self.path(name, args)
        found = _load(path)
        if found is None:
            found = _export(jitted, args)
            _save(path, *found)
        exported, out_tree = found

        def call(*tree_args):
            return jax.tree.unflatten(out_tree, exported.call(*jax.tree.leaves(tree_args)))

        lowered = jax.jit(call, donate_argnums=donate_argnums).lower(*args)
        # kept by XLA's persistent cache however fast it compiles (a small fit's program compiles
        # in less than runner's jax_persistent_cache_min_compile_time_secs, and every run would)
        floor = jax.config.jax_persistent_cache_min_compile_time_secs
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        try:
            return lowered.compile()
        finally:
            jax.config.update("jax_persistent_cache_min_compile_time_secs", floor)

    def compiler(self, name: str, donate_argnums=()):
        """(jitted, *args) -> compiled(name, jitted, *args) (runner.inference.budget's `kept`)."""
        return functools.partial(self.compiled, name, donate_argnums=donate_argnums)


def for_experiment(exp) -> ProgramCache | None:
    """The experiment's kept programs, or None (no jax.cache_dir, a user's code in its config, a
    model, data or method changed since build, several devices)."""
    import jax

    built = exp.built
    if (not exp.cache_dir or built is None or not built.holds(exp) or jax.config.jax_disable_jit
            or jax.device_count() > 1):
        return None
    key = _sha(built.key, data_digest(exp.data), _code_key(), _environment_key())
    return ProgramCache(Path(exp.cache_dir) / "programs", key)


def run(cache: ProgramCache | None, name: str, jitted, *args):
    """`jitted(*args)`, its program read from `cache` where one is kept (None: jitted as it is)."""
    if cache is None:
        return jitted(*args)
    return cache.compiled(name, jitted, *args)(*args)


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
    """Builds a tree definition and nothing else: JAX's PyTreeDef and registry, and the named
    tuples of runner, Optax and NumPyro (the nodes of a fit's outputs)."""
    NAMED_TUPLES = ("runner", "optax", "numpyro", "jax")

    def find_class(self, module, name):
        if (module, name) in (("jaxlib._jax.pytree", "PyTreeDef"), ("jax._src.tree_util", "default_registry")):
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
        if fmt != FORMAT:
            return None
        exported = jax.export.deserialize(bytearray(serialized))
    except Exception:  # a torn, foreign or stale file: traced anew and replaced
        return None
    try:
        os.utime(path)  # recently used
    except OSError:
        pass
    return exported, out_tree


def _save(path: Path, exported, out_tree) -> None:
    """Keep the program in `path` (written whole, then renamed); nothing where it cannot be
    serialized or the folder cannot be written (the run goes on)."""
    try:
        blob = pickle.dumps((FORMAT, bytes(exported.serialize()), out_tree))
    except Exception:  # a program JAX cannot serialize: traced every time
        return
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(blob)
        os.replace(tmp, path)
    except OSError:  # a full disk or a folder not ours to write: the run goes on without it
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return
    _prune(path.parent)


def _prune(folder: Path) -> None:
    """At most MAX_FILES programs: the least recently used go first."""
    try:
        files = sorted(folder.glob("*.program"), key=lambda p: p.stat().st_mtime)
    except OSError:
        return
    for old in files[:max(0, len(files) - MAX_FILES)]:
        try:
            old.unlink()
        except OSError:
            pass
