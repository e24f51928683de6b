"""The lock (uv.lock) pins what pyproject.toml allows: every direct dependency of every extra
is locked at a version inside its bounds, from the public index only, with hashes; and uv
itself agrees the lock is current (``uv lock --check --offline``: no network needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = tomllib.loads((ROOT / "uv.lock").read_text())


def _locked() -> dict[str, list[Version]]:
    versions: dict[str, list[Version]] = {}
    for package in LOCK["package"]:
        name = canonicalize_name(package["name"])
        versions.setdefault(name, []).append(Version(package["version"]))
    return versions


def _requirements() -> list[Requirement]:
    project = PYPROJECT["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return [Requirement(r) for r in reqs]


def test_every_direct_dependency_is_locked_within_its_bounds() -> None:
    locked = _locked()
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name} is not in uv.lock: run `make lock`"
        for version in locked[name]:
            assert req.specifier.contains(version, prereleases=True), (
                f"uv.lock has {req.name} {version}, outside pyproject's {req.specifier}"
            )


def test_every_direct_runtime_dependency_has_an_upper_bound() -> None:
    for raw in PYPROJECT["project"]["dependencies"]:
        req = Requirement(raw)
        assert any(s.operator in ("<", "<=", "==", "~=") for s in req.specifier), (
            f"{req.name}: give it an upper bound the lock was tested within"
        )


def test_lock_comes_from_the_public_index_with_hashes() -> None:
    for package in LOCK["package"]:
        source = package["source"]
        if "editable" in source:  # squall itself
            assert source["editable"] == "."
            continue
        assert source.get("registry") == "https://pypi.org/simple", (package["name"], source)
        files = package.get("wheels", []) + ([package["sdist"]] if "sdist" in package else [])
        assert files and all(f.get("hash", "").startswith("sha256:") for f in files), package[
            "name"
        ]


def test_lock_matches_the_requires_python() -> None:
    assert LOCK["requires-python"] == PYPROJECT["project"]["requires-python"]


def _uv() -> str | None:
    local = ROOT / ".tools" / "uv" / "bin" / "uv"
    return str(local) if local.exists() else shutil.which("uv")


def test_uv_agrees_the_lock_is_current() -> None:
    uv = _uv()
    if uv is None:
        if os.environ.get("CI"):
            pytest.fail("uv is missing (make install-dev puts it in .tools/)")
        pytest.skip("uv is not installed (make install-dev puts it in .tools/)")
    done = subprocess.run(
        [uv, "lock", "--check", "--offline"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"uv.lock is stale, run `make lock`:\n{done.stderr}"
