"""Discovery of strategy plugins: the built-ins, entry points and module paths (does I/O).

The interface lives in :mod:`compute.backtest.plugins`; this module finds implementations:

* the built-ins (:data:`compute.backtest.plugins.BUILTINS`);
* installed packages that declare an entry point in the group ``squall.strategies``
  (``pyproject.toml``: ``[project.entry-points."squall.strategies"] my_strats =
  "my_pkg.strategies:PLUGINS"``);
* module paths from a setting (``"my_pkg.strategies:PLUGINS"`` or ``"my_pkg.strategies"``).

An entry point or a module path names an object that is a plugin, an iterable of plugins, or
a zero-argument callable returning either; a bare module path takes every module-level object
that is a plugin. Every loaded strategy carries its provenance (:meth:`LoadedStrategy.
provenance`: name, version, origin, the module that defines its positions function and the
sha256 of that module's source), which the run registry stores so a rerun can tell whether the
code changed. Two strategies with one name are a configuration error, never a silent override.

A plugin runs on a Ray worker when its module is importable there (installed, or on the
worker's ``PYTHONPATH``): plugins pickle by reference to their module.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from compute.backtest.plugins import BUILTINS, StrategyPlugin
from storage.errors import ConfigurationError

ENTRY_POINT_GROUP = "squall.strategies"


class PluginError(ConfigurationError):
    """A plugin that cannot be loaded, is not a plugin, or clashes with another's name."""


@dataclass(frozen=True)
class LoadedStrategy:
    """A strategy and where it came from."""

    plugin: StrategyPlugin
    origin: str  # "builtin" | "entry_point" | "module"
    source: str  # the entry point ("dist: name = value") or the module path
    module: str  # the module defining the positions function
    source_hash: str  # sha256 of that module's source ("" when it has none)

    @property
    def name(self) -> str:
        return self.plugin.name

    @property
    def load_path(self) -> str:
        """The module path that loads it again (``"pkg.mod:ATTR"`` or ``"pkg.mod"``): the
        setting's entry, or an entry point's value; "" for a built-in."""
        if self.origin == "module":
            return self.source
        if self.origin == "entry_point":
            return self.source.rpartition(" = ")[2]
        return ""

    def provenance(self) -> dict[str, Any]:
        """What the run registry records: name, version, origin, source, module, source_hash."""
        return {
            "name": self.plugin.name,
            "version": self.plugin.version,
            "origin": self.origin,
            "source": self.source,
            "module": self.module,
            "source_hash": self.source_hash,
        }

    def describe(self) -> dict[str, Any]:
        """``GET /strategies`` entry: the plugin's description and its provenance."""
        return {**self.plugin.describe(), "provenance": self.provenance()}


def defining_module(plugin: Any) -> str:
    """The module whose code computes the plugin's positions."""
    fn = getattr(plugin, "positions_fn", None)
    return str(getattr(fn, "__module__", None) or type(plugin).__module__)


def source_hash(module_name: str) -> str:
    """sha256 of a module's source text ("" when it has none, e.g. a compiled extension)."""
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return ""
    loader = spec.loader if spec is not None else None
    get_source = getattr(loader, "get_source", None)
    text = get_source(module_name) if get_source is not None else None
    return hashlib.sha256(text.encode()).hexdigest() if text else ""


def _plugins_of(obj: Any, where: str) -> list[StrategyPlugin]:
    """``obj`` as plugins: a plugin, an iterable of them, or a callable returning either."""
    if isinstance(obj, StrategyPlugin):
        return [obj]
    if callable(obj) and not isinstance(obj, type):
        try:
            obj = obj()
        except Exception as exc:
            raise PluginError(f"{where}: calling it failed: {type(exc).__name__}: {exc}") from exc
        if isinstance(obj, StrategyPlugin):
            return [obj]
    if isinstance(obj, Iterable) and not isinstance(obj, str | bytes | Mapping):
        items = list(obj)
        bad = [type(x).__name__ for x in items if not isinstance(x, StrategyPlugin)]
        if not bad and items:
            return items
    raise PluginError(
        f"{where}: expected a strategy plugin (name, version, summary, params, held_from_start, "
        "validate, warmup, positions, describe; see compute.backtest.plugins), an iterable of "
        f"them, or a callable returning either; got {type(obj).__name__}"
    )


def load_module_path(path: str) -> list[StrategyPlugin]:
    """The plugins behind ``"pkg.module:attr"`` or ``"pkg.module"`` (its module-level plugins)."""
    module_name, _, attr = path.strip().partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise PluginError(
            f"strategy module {path!r}: cannot import {module_name!r}: {type(exc).__name__}: "
            f"{exc} (is it installed or on PYTHONPATH?)"
        ) from exc
    if not attr:
        found = [v for v in vars(module).values() if isinstance(v, StrategyPlugin)]
        if not found:
            raise PluginError(f"strategy module {path!r} defines no strategy plugin")
        return found
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PluginError(f"strategy module {path!r}: {module_name} has no {attr!r}")
        obj = getattr(obj, part)
    return _plugins_of(obj, f"strategy module {path!r}")


def from_entry_points(group: str = ENTRY_POINT_GROUP) -> list[tuple[StrategyPlugin, str]]:
    """Plugins of every installed entry point in ``group``, each with its description."""
    out = []
    for ep in importlib.metadata.entry_points(group=group):
        dist = ep.dist.name if ep.dist is not None else "?"
        where = f"entry point {dist}: {ep.name} = {ep.value}"
        try:
            obj = ep.load()
        except Exception as exc:
            raise PluginError(f"{where}: cannot load: {type(exc).__name__}: {exc}") from exc
        out += [(p, where) for p in _plugins_of(obj, where)]
    return out


def _loaded(plugin: StrategyPlugin, origin: str, source: str) -> LoadedStrategy:
    module = defining_module(plugin)
    return LoadedStrategy(plugin, origin, source, module, source_hash(module))


def discover(
    module_paths: Sequence[str] = (),
    *,
    entry_points: bool = True,
    group: str = ENTRY_POINT_GROUP,
) -> dict[str, LoadedStrategy]:
    """Every strategy by name: built-ins, then entry points, then ``module_paths``.

    Raises :class:`PluginError` for a module or entry point that does not load or is not a
    plugin, and for a name that two strategies claim (the message names both sources).
    """
    found: dict[str, LoadedStrategy] = {}

    def add(item: LoadedStrategy) -> None:
        name = item.plugin.name
        if not isinstance(name, str) or not name.isidentifier():
            raise PluginError(f"{item.source}: strategy name {name!r} is not an identifier")
        if name in found:
            raise PluginError(
                f"strategy name {name!r} is claimed twice: by {found[name].source} and by "
                f"{item.source}; rename one"
            )
        found[name] = item

    for builtin in BUILTINS.values():
        add(_loaded(builtin, "builtin", "compute.backtest.plugins.BUILTINS"))
    if entry_points:
        for plugin, where in from_entry_points(group):
            add(_loaded(plugin, "entry_point", where))
    for path in module_paths:
        for item in load_module_path(path):
            add(_loaded(item, "module", path))
    return found


def spec_provenance(spec: Any) -> dict[str, Any]:
    """What the registry records for a declarative spec (a
    :class:`compute.strategy.spec.StrategySpec`): name, version, origin ``spec``, the canonical
    spec itself and its sha256 as the source hash."""
    return {
        "name": spec.name,
        "version": "spec-" + spec.fingerprint()[:16],
        "origin": "spec",
        "source": spec.canonical(),
        "module": "compute.strategy",
        "source_hash": spec.fingerprint(),
    }


def describe_all(strategies: Mapping[str, LoadedStrategy]) -> list[dict[str, Any]]:
    """``GET /strategies``: each strategy's description with provenance, sorted by name."""
    return [strategies[n].describe() for n in sorted(strategies)]


__all__ = [
    "ENTRY_POINT_GROUP",
    "LoadedStrategy",
    "PluginError",
    "describe_all",
    "discover",
    "from_entry_points",
    "load_module_path",
    "source_hash",
    "spec_provenance",
]
