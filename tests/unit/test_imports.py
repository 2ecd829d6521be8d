"""The layout's rules, read from the code with `ast`: no import circles anywhere in runner/ (a
module's imports inside functions count too), and only the MLflow backend imports mlflow."""
import ast
import collections
import sys
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "runner"
#: the MLflow backend: the store, the model it logs, and the file MLflow runs to load that model
MLFLOW_BACKEND = {"runner.tracking.mlflow.store", "runner.tracking.mlflow.pyfunc", "runner.tracking.mlflow.pyfunc_code"}


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


def test_only_the_mlflow_backend_imports_mlflow():
    users = {m for m, p in modules().items() if any(t == "mlflow" or t.startswith("mlflow.") for t in imports(p))}
    assert users == MLFLOW_BACKEND, users - MLFLOW_BACKEND


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
