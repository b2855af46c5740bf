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
    modules = [m.name for m in pkgutil.walk_packages([str(PKG)], prefix="mlops.")]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted(k for k in sys.modules if k == 'airflow' or k.startswith('airflow.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
