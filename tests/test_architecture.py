"""The dependency direction of DESIGN.md, checked on the import statements themselves."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("serve_app", "compute", "ingestion", "storage", "migrations")
ALLOWED = {
    "serve_app": {"compute", "ingestion", "storage"},
    "ingestion": {"storage"},
    "migrations": {"storage"},
    "storage": set(),
    "compute": set(),
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_design_allows(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package} has no modules"
    bad = {
        str(f.relative_to(ROOT)): sorted(imported_packages(f) - ALLOWED[package] - {package})
        for f in files
    }
    bad = {f: pkgs for f, pkgs in bad.items() if pkgs}
    assert bad == {}, f"{package} imports what DESIGN.md forbids: {bad}"


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import serve_app.cli\nfrom storage.models import Candle\n")
    assert imported_packages(module) == {"serve_app", "storage"}
