"""include/mlops never imports airflow: checked statically and at import time."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import mlops

PKG = Path(mlops.__file__).parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_airflow_import_anywhere_in_the_domain_package():
    files = sorted(PKG.rglob("*.py"))
    assert len(files) >= 10
    offenders = {str(f.relative_to(PKG)): sorted(_imports(f) & {"airflow", "mlops_airflow"}) for f in files}
    assert {f: names for f, names in offenders.items() if names} == {}


def test_importing_every_module_does_not_load_airflow():
    # every module but the `python -m` entry points (they run on import)
    modules = [
        m.name for m in pkgutil.walk_packages([str(PKG)], prefix="mlops.") if not m.name.endswith("__main__")
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted(k for k in sys.modules if k == 'airflow' or k.startswith('airflow.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _runtime_imports(path: Path) -> set[str]:
    """``mlops.*`` modules ``path`` imports at run time (module level or inside functions), not the
    ``if TYPE_CHECKING:`` ones."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("mlops."))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "mlops":
                names.update(f"mlops.{a.name}" for a in node.names)
            elif node.module.startswith("mlops."):
                names.add(node.module)
    return names


def _capability(module: str) -> str:
    """``mlops.deploy.local.target`` -> ``deploy`` (a top-level subpackage, or a top-level module)."""
    return module.split(".")[1]


def test_no_import_cycle_between_capabilities():
    """Capabilities depend on each other in one direction only (the ``python -m`` entry points and the
    ``mlops`` dispatcher, which import everything, are left out)."""
    graph: dict[str, set[str]] = {}
    for f in PKG.rglob("*.py"):
        rel = f.relative_to(PKG.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        if f.name == "__main__.py" or module == "mlops.cli":
            continue
        src = _capability(module) if module.count(".") else module
        deps = {_capability(m) for m in _runtime_imports(f) if m.count(".") and m != "mlops.cli"}
        graph.setdefault(src, set()).update(deps - {src})
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(" -> ".join([*stack[stack.index(dep) :], dep]))
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == [], f"import cycles between capabilities: {cycles}"


def test_only_the_demo_and_the_dispatcher_import_the_demo():
    """The images leave ``mlops.demo`` out (packaging.context.NOT_IN_IMAGES): nothing they run imports it."""
    users = sorted(
        str(f.relative_to(PKG))
        for f in PKG.rglob("*.py")
        if "demo" not in f.relative_to(PKG).parts[:1]
        and any(m == "mlops.demo" or m.startswith("mlops.demo.") for m in _runtime_imports(f))
    )
    assert users == [], users


def test_a_command_left_out_of_an_image_says_so(monkeypatch, capsys):
    from mlops import cli

    monkeypatch.setitem(cli.COMMANDS, "ghost", ("mlops.not_here.cli", "add", "run", "left out"))
    assert cli.main(["ghost", "--anything"]) == 2
    assert "mlops ghost: error: mlops.not_here is not installed here" in capsys.readouterr().err
    assert cli.main(["models"]) == 0  # the other commands still work


def _declared_dependencies() -> set[str]:
    import re
    import tomllib

    project = tomllib.loads((PKG.parents[1] / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs.extend(extra)
    return {re.split(r"[<>=!~\[; ]", s, maxsplit=1)[0].lower().replace("_", "-") for s in specs}


def test_every_third_party_import_is_a_declared_dependency():
    # the wheel installs what pyproject.toml names: an import of anything else fails outside this venv
    from importlib.metadata import packages_distributions

    dists = packages_distributions()
    imported = set().union(*(_imports(f) for f in PKG.rglob("*.py")))
    third_party = {
        m for m in imported if m not in sys.stdlib_module_names and m not in {"mlops", "__future__"}
    }
    assert len(third_party) >= 10
    declared = _declared_dependencies()
    undeclared = {
        m: sorted(d.lower() for d in dists.get(m, [m]))
        for m in third_party
        if not {d.lower().replace("_", "-") for d in dists.get(m, [m])} & declared
    }
    assert undeclared == {}, f"imported by mlops but not in pyproject.toml dependencies: {undeclared}"
