"""compute is pure: no I/O, no Ray, no clock, nothing of squall's other packages."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "compute"
FORBIDDEN_MODULES = {
    "ray",
    "time",
    "datetime",
    "socket",
    "urllib",
    "http",
    "httpx",
    "requests",
    "sqlalchemy",
    "psycopg",
    "os",
    "pathlib",
    "io",
    "shutil",
    "subprocess",
    "random",
    "storage",
    "ingestion",
    "serve_app",
    "migrations",
}
FORBIDDEN_CALLS = {"open", "print", "input", "exec", "eval", "hash"}


def test_compute_modules_do_no_io_and_read_no_clock() -> None:
    problems = []
    for path in sorted(ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module.split(".")[0]]
            problems += [f"{path.name}: imports {n}" for n in names if n in FORBIDDEN_MODULES]
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in FORBIDDEN_CALLS
            ):
                problems.append(f"{path.name}:{node.lineno}: calls {node.func.id}()")
    assert problems == []
