"""A request's strategy, resolved: a built-in or plugin by name, or a declarative spec; its
parameters, warm-up, positions, look-ahead checks and provenance; how it travels to a worker.

Every route that runs a strategy takes the same union (``requests.backtest.StrategyIn``):
``"ema_cross"``, ``{"name": "donchian", "params": {...}}`` or ``{"spec": {...}, "params":
{...}}``. :func:`resolve` turns it into a :class:`Resolved` before any work: a spec is parsed
and validated (a bad one is a 422 ``invalid_strategy`` carrying ``RuleError.as_dict()``: field,
token, position, valid), a name is looked up among the built-ins, then the plugins of
``SQUALL_STRATEGY_MODULES`` and the ``squall.strategies`` entry points
(:func:`serve_app.strategy_plugins.discover`, cached per module list).

Built-ins keep their own code path (``compute.backtest.strategies.positions`` by name), so a
request that names one answers bit for bit what it answered before plugins existed. Every
*user* strategy (spec or plugin) is checked by :func:`check` (``compute.backtest.lookahead``:
past positions must not change when bars are added, nor depend on where the history starts)
on the run's own candles before the backtest; the request's ``lookahead`` says whether a
failure is rejected (422 ``lookahead_detected`` / ``recursion_detected``) or flagged.

A :class:`Resolved` pickles as its :class:`StrategyRef` - the spec's JSON, or a plugin's module
path, the ``sys.path`` entries it was imported from here and its source hash - never as code: a
Ray worker re-imports the plugin's module (adding those entries when the module is not
importable there: workers do not share a replica's ``sys.path`` changes) and refuses a module
whose source differs from the one this process checked.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from serve_app.services.requests.backtest import NamedStrategy, SpecStrategy, StrategyIn
from serve_app.settings import Settings
from storage.errors import ConfigurationError

LABEL_CHARS = 40  # the registry's strategy column
BUILTINS_SOURCE = "compute.backtest.plugins.BUILTINS"
SPEC_NOTE = (
    'any route that takes a strategy also takes a declarative spec: {"spec": {"long_entry": '
    '"ema:{fast} > ema:{slow}", ...}, "params": {"fast": 12}} (docs/strategies.md); it is '
    "parsed and validated before any work and checked for look-ahead on every run"
)


# ------------------------------------------------------------------------------ catalogue
@functools.lru_cache(maxsize=8)
def _catalogue(paths: tuple[str, ...]) -> dict[str, Any]:
    from serve_app.strategy_plugins import discover

    return discover(paths)


def catalogue(settings: Settings) -> dict[str, Any]:
    """Every strategy by name (``LoadedStrategy``): built-ins, entry points, the setting's
    modules. Discovered once per module list (``clear_catalogue`` forgets it)."""
    return _catalogue(tuple(settings.strategy_modules))


def clear_catalogue() -> None:
    """Forget discovered plugins (a test that installs an entry point calls this)."""
    _catalogue.cache_clear()
    _builtin_provenance.cache_clear()
    with _LOCK:
        _PLUGINS.clear()


@functools.lru_cache(maxsize=1)
def _builtin_provenance() -> dict[str, dict[str, Any]]:
    from compute.backtest.plugins import BUILTINS
    from serve_app.strategy_plugins import LoadedStrategy, defining_module, source_hash

    out = {}
    for name, plugin in BUILTINS.items():
        module = defining_module(plugin)
        loaded = LoadedStrategy(plugin, "builtin", BUILTINS_SOURCE, module, source_hash(module))
        out[name] = loaded.provenance()
    return out


# ------------------------------------------------------------------------------ the ref
@dataclass(frozen=True)
class StrategyRef:
    """What rebuilds a strategy in any process: a built-in's name, a spec's JSON, or a plugin's
    module path with the ``sys.path`` entries it came from and its source hash."""

    kind: str  # "builtin" | "plugin" | "spec"
    name: str
    spec: dict[str, Any] | None = None
    load_path: str = ""
    paths: tuple[str, ...] = ()
    module: str = ""
    source_hash: str = ""


_PLUGINS: dict[tuple[str, ...], Any] = {}
_LOCK = threading.Lock()


def _path_entries(*modules: str) -> tuple[str, ...]:
    """The ``sys.path`` entries the top-level packages of ``modules`` were imported from."""
    out: list[str] = []
    for module in modules:
        top = sys.modules.get(module.split(".")[0]) if module else None
        file = getattr(top, "__file__", None)
        if not file:
            continue
        path = Path(file).resolve()
        root = str(path.parent.parent if path.name == "__init__.py" else path.parent)
        if root not in out:
            out.append(root)
    return tuple(out)


def _import_plugin(ref: StrategyRef) -> Any:
    """The plugin behind ``ref``, imported in this process (see the module docstring)."""
    from serve_app.strategy_plugins import load_module_path, source_hash

    top = ref.load_path.partition(":")[0].split(".")[0]
    if importlib.util.find_spec(top) is None:
        for entry in ref.paths:
            if entry not in sys.path:
                sys.path.append(entry)
        importlib.invalidate_caches()
    found = [p for p in load_module_path(ref.load_path) if p.name == ref.name]
    if not found:
        raise ConfigurationError(
            f"strategy {ref.name!r}: {ref.load_path} no longer defines it in this process",
            code="plugin_unavailable",
            parameter="strategy",
        )
    if ref.source_hash and source_hash(ref.module) != ref.source_hash:
        raise ConfigurationError(
            f"strategy {ref.name!r}: module {ref.module} here is not the code the request was "
            f"checked with (source sha256 {ref.source_hash[:12]}...); install the same version "
            "on every node",
            code="plugin_changed",
            parameter="strategy",
        )
    return found[0]


def plugin_of(ref: StrategyRef) -> Any:
    """The strategy plugin of ``ref`` (cached per process)."""
    from compute.backtest.plugins import BUILTINS

    if ref.kind == "builtin":
        return BUILTINS[ref.name]
    key = (ref.kind, ref.name, ref.load_path, ref.source_hash, repr(ref.spec))
    with _LOCK:
        if key in _PLUGINS:
            return _PLUGINS[key]
    if ref.kind == "spec":
        from compute.strategy.plugin import spec_plugin

        plugin = spec_plugin(ref.spec or {})
    else:
        plugin = _import_plugin(ref)
    with _LOCK:
        _PLUGINS[key] = plugin
    return plugin


# ------------------------------------------------------------------------------ resolved
@dataclass(frozen=True)
class Resolved:
    """A request's strategy, ready to run. Pickles as its :class:`StrategyRef` and
    provenance; the plugin is rebuilt on first use in the receiving process (so an import
    that fails on a worker fails the run there, with its message, not the unpickling)."""

    ref: StrategyRef
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)
    loaded: Any = field(default=None, repr=False, compare=False)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Resolved, (self.ref, self.provenance))

    @property
    def plugin(self) -> Any:
        """The ``StrategyPlugin`` (imported here on first use)."""
        if self.loaded is None:
            object.__setattr__(self, "loaded", plugin_of(self.ref))
        return self.loaded

    @property
    def builtin(self) -> bool:
        return self.ref.kind == "builtin"

    @property
    def label(self) -> str:
        """The name the registry files it under (``spec:<name>`` for a spec)."""
        text = f"spec:{self.ref.name}" if self.ref.kind == "spec" else self.ref.name
        return text[:LABEL_CHARS]

    @property
    def engine_strategy(self) -> Any:
        """What ``compute.backtest.walkforward`` takes: a built-in's name, else the plugin."""
        return self.ref.name if self.builtin else self.plugin

    @property
    def held_from_start(self) -> bool:
        return bool(self.plugin.held_from_start)

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The full parameter dict; 422 naming what is wrong and what is valid."""
        from compute.backtest import strategies
        from compute.core.errors import ComputeError
        from compute.strategy.rules import RuleError

        try:
            if self.builtin:
                return strategies.validate_strategy(self.ref.name, dict(params))
            return dict(self.plugin.validate(dict(params)))
        except RuleError as exc:
            raise rule_error(exc) from None
        except ComputeError as exc:
            if self.builtin:
                from serve_app.services.backtest import strategy_error

                raise strategy_error(exc, self.ref.name) from None
            raise ConfigurationError(
                str(exc), code="invalid_parameter", parameter="params",
                valid=[describe(self.plugin)],
            ) from None  # fmt: skip

    def required_bars(self, params: Mapping[str, Any]) -> int:
        """Candles for one traded bar: warm-up + 2 (a decision at t executes at t + 1)."""
        from compute.backtest import strategies

        if self.builtin:
            return int(strategies.required_bars(self.ref.name, params))
        return int(self.plugin.warmup(params)) + 2

    def positions(self, frame: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> Any:
        """Target weights on ``frame``; a plugin's own failure is a 422 ``strategy_failed``."""
        from compute.backtest import strategies

        if self.builtin:
            f = frame
            return strategies.positions(
                self.ref.name, params, f["open"], f["high"], f["low"], f["close"]
            )
        try:
            return self.plugin.positions(frame, params)
        except strategies.StrategyError as exc:
            raise ConfigurationError(
                f"{exc}; fix the strategy", code="strategy_failed", parameter="strategy"
            ) from None


def describe(plugin: Any) -> dict[str, Any]:
    """A plugin's description with non-finite bounds as null (JSON-safe)."""
    out = dict(plugin.describe())
    out["params"] = [
        {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in p.items()}
        for p in out.get("params", [])
    ]
    return out


def rule_error(exc: Any) -> ConfigurationError:
    """A spec's ``RuleError`` as the 422 body: ``RuleError.as_dict()`` at the top level."""
    d = exc.as_dict()
    where = f"{d['field']}: " if d.get("field") else ""
    message = f"{where}{d['message']} (token {d['token']!r} at position {d['position']})"
    return ConfigurationError(
        message,
        code="invalid_strategy",
        field=d["field"],
        token=d["token"],
        position=d["position"],
        valid=d["valid"],
    )


def _unknown(settings: Settings, name: str) -> ConfigurationError:
    known = catalogue(settings)
    return ConfigurationError(
        f"unknown strategy {name!r}; valid strategies: {', '.join(sorted(known))} "
        '(GET /strategies lists their parameters), or a declarative spec {"spec": {...}}',
        code="unknown_strategy",
        parameter="strategy",
        valid=[describe(known[n].plugin) for n in sorted(known)],
    )


def resolve(
    settings: Settings, strategy: StrategyIn, params: Mapping[str, Any] | None = None
) -> tuple[Resolved, dict[str, Any]]:
    """The request's strategy and the parameters it was given (``params`` of the request or
    of the strategy object: one of them). Raises 422s before any work."""
    from compute.backtest.strategies import STRATEGIES

    outer = dict(params or {})
    if isinstance(strategy, SpecStrategy):
        return _resolve_spec(strategy, outer)
    name, inner = (strategy, {}) if isinstance(strategy, str) else (strategy.name, {})
    if isinstance(strategy, NamedStrategy):
        inner = dict(strategy.params)
    given = _one_of(inner, outer)
    if name in STRATEGIES:
        ref = StrategyRef("builtin", name)
        return Resolved(ref, _builtin_provenance()[name], plugin_of(ref)), given
    loaded = catalogue(settings).get(name)
    if loaded is None:
        raise _unknown(settings, name)
    ref = StrategyRef(
        "plugin",
        name,
        load_path=loaded.load_path,
        paths=_path_entries(loaded.load_path.partition(":")[0], loaded.module),
        module=loaded.module,
        source_hash=loaded.source_hash,
    )
    with _LOCK:
        _PLUGINS[("plugin", name, ref.load_path, ref.source_hash, "None")] = loaded.plugin
    return Resolved(ref, loaded.provenance(), loaded.plugin), given


def _one_of(inner: dict[str, Any], outer: dict[str, Any]) -> dict[str, Any]:
    if inner and outer:
        raise ConfigurationError(
            "parameters are given twice (params and strategy.params); give them in one place",
            code="invalid_parameter",
            parameter="params",
        )
    return inner or outer


def _resolve_spec(strategy: SpecStrategy, outer: dict[str, Any]) -> tuple[Resolved, dict[str, Any]]:
    from compute.strategy.plugin import SpecPlugin
    from compute.strategy.rules import RuleError
    from compute.strategy.spec import parse_spec
    from serve_app.strategy_plugins import spec_provenance

    try:
        spec = parse_spec(strategy.spec)
    except RuleError as exc:
        raise rule_error(exc) from None
    given = _one_of(dict(strategy.params), outer)
    ref = StrategyRef("spec", spec.name, spec=dict(spec.source))
    return Resolved(ref, spec_provenance(spec), SpecPlugin(spec)), given


# ------------------------------------------------------------------------------- running
def frame_of(data: Any) -> dict[str, np.ndarray]:
    """A strategy frame (``compute.backtest.plugins``) of a ``SeriesData``: ts, OHLC, and
    volume where every bar has a finite one."""
    out = {k: getattr(data, k) for k in ("ts", "open", "high", "low", "close")}
    volume = getattr(data, "volume", None)
    if volume is not None and len(volume) and np.isfinite(volume).all() and (volume >= 0).all():
        out["volume"] = volume
    return out


def check(
    resolved: Resolved,
    frame: Mapping[str, np.ndarray],
    params: Mapping[str, Any],
    policy: str,
    *,
    full: np.ndarray | None = None,
) -> dict[str, Any] | None:
    """The look-ahead and recursion checks of a user strategy on ``frame`` (None for a
    built-in); raises the 422 when it fails and ``policy`` is ``"reject"``."""
    if resolved.builtin:
        return None
    from compute.backtest.lookahead import check_plugin
    from compute.backtest.strategies import StrategyError
    from compute.core.errors import SpecError

    try:
        result = check_plugin(resolved.plugin, frame, params, full=full)
    except StrategyError as exc:
        raise ConfigurationError(
            f"{exc}; fix the strategy", code="strategy_failed", parameter="strategy"
        ) from None
    except SpecError as exc:  # a history too short to cut
        return {"passed": None, "skipped": str(exc), "policy": policy}
    out = {**result.as_dict(), "policy": policy}
    if result.passed or policy != "reject":
        return out
    ts = np.asarray(frame["ts"]) if "ts" in frame else None
    look, rec = result.lookahead, result.recursion
    if look.flagged:
        bar = int(look.first_bar or 0)
        raise ConfigurationError(
            f"strategy {resolved.label!r} reads the future: its position at bar {bar} changed "
            f"when the bars after it were cut off (history of {look.cut} bars); fix it, or "
            'send "lookahead": "flag" to run it anyway',
            code="lookahead_detected",
            parameter="strategy",
            first_bar=bar,
            first_bar_ts_unix=None if ts is None else int(ts[bar]),
            cut=look.cut,
            check=out,
        )
    bar = int(rec.first_bar or 0)
    raise ConfigurationError(
        f"strategy {resolved.label!r} depends on where its history starts: {rec.share:.2%} of "
        f"the compared bars differ when the history starts {rec.offset} bars later (tolerance "
        f'{rec.tolerance:.2%}); fix it, or send "lookahead": "flag" to run it anyway',
        code="recursion_detected",
        parameter="strategy",
        first_bar=bar,
        first_bar_ts_unix=None if ts is None else int(ts[bar]),
        cut=None,
        check=out,
    )
