"""The layout's rules, read from the code with `ast`: no import circles anywhere in runner/ (a
module's imports inside functions count too); only the MLflow backend (runner/tracking/mlflow/)
imports mlflow or speaks its words (`mlflow.runName`, a `mlflow ui` hint: no string in the code
elsewhere says mlflow; docstrings may); no function over 80 lines, no parameter list over 6."""
import ast
import collections
import sys
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "runner"
#: the MLflow backend: its events, the store's client, the model it logs and the file MLflow runs to load it
MLFLOW_BACKEND = "runner.tracking.mlflow"


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports(path: Path, mods=()) -> set[str]:
    """What a module imports. `from pkg import sub` of a submodule is an import of pkg.sub (pkg's
    __init__ runs first either way, as for every module under pkg); of a name, of pkg."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names}
            found |= subs & set(mods) if subs <= set(mods) else {node.module, *subs}
    return found


def test_no_import_circles():
    mods = modules()
    graph = {m: {t for t in imports(p, mods) if t in mods and t != m} for m, p in mods.items()}
    cycles, state = [], collections.defaultdict(int)  # 0 new, 1 on the path, 2 done

    def visit(m, path):
        state[m] = 1
        for n in sorted(graph[m]):
            if state[n] == 1:
                cycles.append(path[path.index(n):] + [n])
            elif state[n] == 0:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(mods):
        if state[m] == 0:
            visit(m, [m])
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def in_backend(module: str) -> bool:
    return module == MLFLOW_BACKEND or module.startswith(MLFLOW_BACKEND + ".")


def test_only_the_mlflow_backend_imports_mlflow():
    users = {m for m, p in modules().items() if any(t == "mlflow" or t.startswith("mlflow.") for t in imports(p))}
    assert users and all(in_backend(m) for m in users), sorted(m for m in users if not in_backend(m))


def code_strings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of the string constants of a module that are not docstrings."""
    tree = ast.parse(path.read_text())
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def test_only_the_mlflow_backend_speaks_mlflows_words():
    found = [f"{m}:{line}: {text!r}" for m, p in sorted(modules().items()) if not in_backend(m)
             for line, text in code_strings(p) if "mlflow" in text.lower()]
    assert not found, "\n".join(found)


def test_no_function_over_80_lines_or_6_parameters():
    long, wide = [], []
    for m, p in sorted(modules().items()):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                params = [x for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
                params += [x for x in (a.vararg, a.kwarg) if x is not None]
                if node.end_lineno - node.lineno + 1 > 80:
                    long.append(f"{m}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
                if len(params) > 6:
                    wide.append(f"{m}.{node.name}: {len(params)} parameters")
    assert not long and not wide, long + wide


def test_the_circle_check_finds_a_circle(tmp_path, monkeypatch):
    """The check itself can fail: two modules importing each other are reported."""
    pkg = tmp_path / "runner"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from runner.b import g\n")
    (pkg / "b.py").write_text("from runner import a\nimport runner.a\n")
    here = sys.modules[__name__]  # (this module; __import__ would give the tests package)
    monkeypatch.setattr(here, "PACKAGE", pkg)
    monkeypatch.setattr(here, "ROOT", tmp_path)
    try:
        test_no_import_circles()
    except AssertionError as e:
        assert "runner.a -> runner.b -> runner.a" in str(e)
    else:
        raise AssertionError("the circle was not found")


#: optional parts and the extra of pyproject.toml that brings what they import
EXTRAS = {"hydra_plugins/runner_slurm": "slurm", "hydra_plugins/runner_ray": "ray", "runner/search.py": "optuna",
          "runner/trial.py": "optuna", "runner/optim.py": "lbfgs"}
#: a distribution that holds a module, and the one pyproject.toml names for it (its meta-package,
#: which pins it to the same version: the `mlflow` module's files are in mlflow-skinny and mlflow-tracing)
PROVIDED_BY = {"mlflow-skinny": "mlflow", "mlflow-tracing": "mlflow"}


def declared(extra: str | None = None) -> set[str]:
    """The distributions pyproject.toml requires (normalised names), with those of `extra`."""
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [*project["dependencies"], *(project["optional-dependencies"][extra] if extra else [])]
    return {re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", r).group()).lower() for r in reqs}


def distribution_of(module: str) -> str | None:
    """The installed distribution whose files hold `module` (a namespace package's part too:
    hydra_plugins.hydra_ray_launcher is hydra-ray-launcher's), normalised; None for none."""
    import importlib.metadata as md
    import importlib.util
    import re

    spec = importlib.util.find_spec(module)
    origin = spec and (spec.origin if spec.origin not in (None, "namespace") else
                       next(iter(spec.submodule_search_locations or []), None))
    if not origin:
        return None
    origin = Path(origin).resolve()
    for dist in md.distributions():
        for f in dist.files or ():
            if f.name in ("__init__.py", origin.name) and Path(dist.locate_file(f)).resolve() in (origin, origin / "__init__.py"):
                return re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
    return None


def test_every_third_party_import_is_declared_in_pyproject():
    """`pip install .` brings what runner imports: each module outside the standard library that
    runner/ or hydra_plugins/ imports (inside functions too) comes from a distribution that
    pyproject.toml requires, directly (not through another's requirements: pandas came with
    MLflow), or from the extra of the optional part that imports it."""
    found: dict[str, set[str]] = collections.defaultdict(set)
    for folder in ("runner", "hydra_plugins"):
        for path in (ROOT / folder).rglob("*.py"):
            for name in imports(path):
                parts = name.split(".")
                top = ".".join(parts[:2]) if parts[0] == "hydra_plugins" else parts[0]
                if parts[0] in sys.stdlib_module_names or parts[0] == "runner" or (
                        parts[0] == "hydra_plugins" and (ROOT / "hydra_plugins" / parts[1]).exists()):
                    continue  # the standard library, or this project's own
                found[top].add(str(path.relative_to(ROOT)))
    undeclared = []
    for module, files in sorted(found.items()):
        dist = distribution_of(module)
        for f in sorted(files):
            extra = next((e for prefix, e in EXTRAS.items() if f.startswith(prefix)), None)
            if dist is None or PROVIDED_BY.get(dist, dist) not in declared(extra):
                undeclared.append(f"{module} ({dist or 'not installed'}) imported by {f}")
    assert len(found) >= 15, sorted(found)  # numpy, jax, numpyro, hydra, omegaconf, mlflow, ...
    assert not undeclared, "not in pyproject.toml's dependencies: " + "; ".join(undeclared)
