"""What makes a run reproducible: the code version and a stable hash of its request.

``code_version()`` is the git commit of the working tree when there is one (with ``-dirty``
when tracked files differ from it, so a hash never claims code it did not run), else the
installed package version. A Ray job's working directory has no ``.git``: the submitter passes
its own version in ``SQUALL_CODE_VERSION``, which wins when set.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from serve_app.version import package_version
from storage.runs import dumps

ROOT = Path(__file__).resolve().parents[2]
CODE_VERSION_ENV = "SQUALL_CODE_VERSION"


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@lru_cache(maxsize=1)
def _detected_version() -> str:
    if not (ROOT / ".git").exists():
        return package_version()
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return package_version()
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return f"{commit}-dirty" if dirty else commit


def code_version() -> str:
    """The git hash (``-dirty`` if modified) or the package version; env override first."""
    return os.environ.get(CODE_VERSION_ENV) or _detected_version()


def canonical_request(request: BaseModel | dict[str, Any]) -> dict[str, Any]:
    """The request as plain JSON values, every default spelled out (what is stored)."""
    if isinstance(request, BaseModel):
        return dict(request.model_dump(mode="json"))
    return dict(request)


def request_hash(request: BaseModel | dict[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of the request: equal requests, equal hashes."""
    return hashlib.sha256(dumps(canonical_request(request))).hexdigest()
