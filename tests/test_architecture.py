"""The structure of DESIGN.md, checked on the source itself.

* packages: ``serve_app -> {compute, ingestion, storage}``, ``ingestion -> storage``,
  ``migrations -> storage``; ``compute`` and ``storage`` import nothing of ours;
* ``compute`` by domain, ``core`` at the bottom, and no Ray anywhere in ``compute``;
* services (``serve_app/services``) import neither ``fastapi``/``starlette`` nor
  ``serve_app.api``: routes, the CLI and Ray jobs all call them;
* no SQL outside ``storage`` (no ``select``/``func``/``text``/DML builders from SQLAlchemy, no
  ``session.execute``): every query lives in a repository;
* no route module over ``MAX_ROUTE_LINES``.

Each rule is a function of a source tree, and each has a planted violation below that makes
it fail: a rule that cannot fail checks nothing.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("serve_app", "compute", "ingestion", "storage", "migrations", "squall")
ALLOWED = {
    "squall": set(),  # the Python client talks HTTP only
    "serve_app": {"compute", "ingestion", "storage"},
    "ingestion": {"storage"},
    "migrations": {"storage"},
    "storage": set(),
    "compute": set(),
}
COMPUTE_LAYERS = {
    "core": set(),
    "indicators": {"core"},
    "risk": {"core"},
    "simulation": {"core"},
    "backtest": {"core", "indicators"},
    "strategy": {"core", "indicators", "backtest"},
}
SQL_NAMES = {"select", "func", "text", "insert", "update", "delete", "and_", "or_", "literal"}
HTTP_PACKAGES = {"fastapi", "starlette"}
MAX_ROUTE_LINES = 320


def imports(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """``(module, names)`` of every absolute import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out: list[tuple[str, tuple[str, ...]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, tuple(a.name for a in node.names)))
    return out


def imported_packages(path: Path) -> set[str]:
    return {module.split(".")[0] for module, _ in imports(path)} & set(PACKAGES)


def _files(root: Path, package: str) -> list[Path]:
    return sorted((root / package).rglob("*.py"))


# ---------------------------------------------------------------------------------- rules
def package_violations(root: Path) -> dict[str, list[str]]:
    bad = {}
    for package in PACKAGES:
        for f in _files(root, package):
            wrong = sorted(imported_packages(f) - ALLOWED[package] - {package})
            if wrong:
                bad[str(f.relative_to(root))] = wrong
    return bad


def compute_layer_violations(root: Path) -> dict[str, list[str]]:
    bad = {}
    for f in _files(root, "compute"):
        rel = f.relative_to(root / "compute").parts
        layer = rel[0] if len(rel) > 1 else None
        used = set()
        for module, names in imports(f):
            parts = module.split(".")
            if parts[0] == "ray":
                used.add("ray")
            if parts[0] != "compute":
                continue
            if len(parts) > 1:
                used.add(parts[1])
            else:  # from compute import core
                used.update(names)
        allowed = {layer, *COMPUTE_LAYERS[layer]} if layer in COMPUTE_LAYERS else set()
        wrong = sorted(used - allowed)
        if wrong:
            bad[str(f.relative_to(root))] = wrong
    return bad


def service_violations(root: Path) -> dict[str, list[str]]:
    bad = {}
    for f in _files(root, "serve_app/services"):
        wrong = sorted(
            {
                module
                for module, _ in imports(f)
                if module.split(".")[0] in HTTP_PACKAGES or module.startswith("serve_app.api")
            }
        )
        if wrong:
            bad[str(f.relative_to(root))] = wrong
    return bad


def sql_violations(root: Path) -> dict[str, list[str]]:
    bad: dict[str, list[str]] = {}
    for package in ("serve_app", "ingestion", "compute"):
        for f in _files(root, package):
            found = sorted(
                {
                    f"{module}.{name}"
                    for module, names in imports(f)
                    if module.split(".")[0] == "sqlalchemy"
                    for name in names
                    if name in SQL_NAMES or module.startswith("sqlalchemy.dialects")
                }
            )
            tree = ast.parse(f.read_text())
            found += [
                f"line {n.lineno}: .{n.func.attr}()"
                for n in ast.walk(tree)
                if isinstance(n, ast.Call)
                and isinstance(n.func, ast.Attribute)
                and n.func.attr in ("execute", "scalar", "scalars")
                and isinstance(n.func.value, ast.Name)
                and n.func.value.id in ("session", "conn", "connection")
            ]
            if found:
                bad[str(f.relative_to(root))] = found
    return bad


def long_routes(root: Path) -> dict[str, int]:
    routes = [f for f in _files(root, "serve_app/api") if "router = APIRouter" in f.read_text()]
    return {
        str(f.relative_to(root)): n
        for f in routes
        if (n := len(f.read_text().splitlines())) > MAX_ROUTE_LINES
    }


RULES: dict[str, Callable[[Path], Mapping[str, object]]] = {
    "packages": package_violations,
    "compute layers": compute_layer_violations,
    "services": service_violations,
    "sql": sql_violations,
    "route size": long_routes,
}


# ------------------------------------------------------------------------- the real tree
@pytest.mark.parametrize("rule", list(RULES))
def test_the_tree_keeps_the_rule(rule: str) -> None:
    assert RULES[rule](ROOT) == {}, f"{rule}: {RULES[rule](ROOT)}"


def test_every_package_has_modules() -> None:
    assert all(_files(ROOT, p) for p in PACKAGES)
    assert set(COMPUTE_LAYERS) == {p.name for p in (ROOT / "compute").iterdir() if p.is_dir()
                                   and (p / "__init__.py").exists()}  # fmt: skip


# ------------------------------------------------------------------- planted violations
PLANTS = {
    "packages": ("storage/bad.py", "from serve_app.settings import Settings\n"),
    "compute layers": ("compute/core/bad.py", "from compute.backtest import engine\n"),
    "services": ("serve_app/services/bad.py", "from fastapi import HTTPException\n"),
    "sql": ("serve_app/bad.py", "from sqlalchemy import select\n"),
    "route size": (
        "serve_app/api/bad.py",
        "router = APIRouter()\n" + "x = 1\n" * (MAX_ROUTE_LINES + 1),
    ),
}
EXTRA_PLANTS = [
    ("compute layers", "compute/simulation/bad.py", "import ray\n"),
    ("compute layers", "compute/risk/bad.py", "from compute import indicators\n"),
    ("services", "serve_app/services/bad.py", "from serve_app.api.errors import ApiError\n"),
    ("sql", "ingestion/bad.py", "def f(session):\n    return session.execute(1)\n"),
    ("packages", "compute/bad.py", "import ingestion.jobs\n"),
    ("packages", "squall/bad.py", "from serve_app.api import create_app\n"),
    ("packages", "serve_app/bad.py", "from squall.client import Client\n"),
]


def _tree(tmp_path: Path) -> Path:
    for package in PACKAGES:
        (tmp_path / package).mkdir(parents=True, exist_ok=True)
        (tmp_path / package / "__init__.py").write_text("")
    return tmp_path


@pytest.mark.parametrize(
    ("rule", "where", "code"),
    [(r, *PLANTS[r]) for r in PLANTS] + EXTRA_PLANTS,
)
def test_a_planted_violation_fails_the_rule(
    tmp_path: Path, rule: str, where: str, code: str
) -> None:
    root = _tree(tmp_path)
    assert RULES[rule](root) == {}
    target = root / where
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(code)
    found = RULES[rule](root)
    assert where in found, found
