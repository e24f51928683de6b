"""The request of a research command: a spec file, then the flags on top, checked by the route's
own request model.

``--spec FILE`` holds the JSON body the route takes (JSON or YAML; ``-`` reads stdin); the
flags of the common fields, ``--param K=V``, ``--grid K=V1,V2`` and ``--set FIELD=VALUE`` (any
field, dotted for nested ones: ``shocks.leverage=2``) override it. Values are read as JSON
(``12``, ``0.5``, ``true``, ``[1, 2]``) and fall back to text (``2024-01-01``). A request the
model refuses is a :class:`ValueError` naming each field and what is wrong with it (the CLI
prints it once and exits 2), the same wording as the route's 422.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


def read_spec(name: str | None) -> dict[str, Any]:
    """The mapping in the spec file (``-``: stdin); empty without one."""
    if name is None:
        return {}
    if name == "-":
        text, where = sys.stdin.read(), "stdin"
    else:
        path = Path(name)
        if not path.is_file():
            raise ValueError(f"--spec {name}: no such file")
        text, where = path.read_text(), name
    try:
        data = json.loads(text)
    except json.JSONDecodeError as json_error:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(
                f"--spec {where}: neither JSON ({json_error}) nor YAML ({exc})"
            ) from None
    if not isinstance(data, dict):
        raise ValueError(
            f"--spec {where}: the spec is a mapping of request fields (the route's JSON body), "
            f"got {type(data).__name__}"
        )
    return data


def value(text: str) -> Any:
    """``text`` as JSON if it is JSON (numbers, booleans, lists, objects), else as text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def pair(text: str, flag: str) -> tuple[str, str]:
    """``KEY=VALUE`` split once; a clear error otherwise."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"{flag} takes KEY=VALUE (e.g. {flag} fast=12), got {text!r}")
    return key.strip(), raw.strip()


def pairs(items: list[str] | None, flag: str) -> dict[str, Any]:
    """``--param fast=12 --param slow=26`` as ``{"fast": 12, "slow": 26}``."""
    return {k: value(v) for k, v in (pair(item, flag) for item in items or [])}


def grid(items: list[str] | None) -> dict[str, list[Any]]:
    """``--grid fast=5,10,20`` as ``{"fast": [5, 10, 20]}`` (a JSON list works too)."""
    out: dict[str, list[Any]] = {}
    for item in items or []:
        key, raw = pair(item, "--grid")
        parsed = value(raw)
        out[key] = parsed if isinstance(parsed, list) else [value(v) for v in raw.split(",")]
    return out


def set_path(spec: dict[str, Any], dotted: str, new: Any) -> None:
    """``spec[a][b] = new`` for ``a.b`` (missing levels are created)."""
    *parents, last = dotted.split(".")
    node = spec
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[last] = new


def _merge(into: dict[str, Any], flags: dict[str, Any]) -> None:
    for key, new in flags.items():
        if new is None:
            continue
        if isinstance(new, dict) and isinstance(into.get(key), dict):
            _merge(into[key], new)  # --param fast=5 changes one parameter of the spec's params
        else:
            into[key] = new


def merged(base: dict[str, Any], flags: dict[str, Any], sets: list[str] | None) -> dict[str, Any]:
    """The spec with every given flag (not None) and every ``--set`` applied, in that order."""
    out = json.loads(json.dumps(base))  # a deep copy the overrides may change
    _merge(out, flags)
    for item in sets or []:
        key, raw = pair(item, "--set")
        set_path(out, key, value(raw))
    return out


def location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "request"


def checked(model: type[Model], spec: dict[str, Any], what: str) -> Model:
    """``spec`` as the route's request model; every problem in one line otherwise."""
    try:
        return model.model_validate(spec)
    except ValidationError as exc:
        problems = "; ".join(
            f"{location(tuple(err.get('loc', ())))}: {err.get('msg', '')}" for err in exc.errors()
        )
        raise ValueError(
            f"invalid {what} request: {problems} (fix the spec or the flag; "
            f"`squall {what} --help` lists the flags)"
        ) from None
