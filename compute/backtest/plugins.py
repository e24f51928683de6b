"""The strategy plugin interface, and the built-in strategies as plugins of it.

A strategy plugin turns a *frame* - a dict of ``(T,)`` NumPy arrays ``open``, ``high``,
``low``, ``close``, ``volume`` (when known) and ``ts`` (unix seconds) of one series - and a dict
of parameters into **target weights** ``(T,)``: the weight decided at the close of each bar,
executed by :func:`compute.backtest.engine.run_backtest` at the next open (``-1`` short, ``0``
flat, ``1`` long; any real in ``[-10, 10]``, fractions included; the run's sizing and
``max_leverage`` apply on top). Its ``positions`` must be causal: the weight at ``t`` may read
bars ``<= t`` only (:mod:`compute.backtest.lookahead` checks it on every run).

Anything with the attributes of :class:`StrategyPlugin` is a plugin; :class:`Plugin` is the
ready-made dataclass, and :func:`strategy` makes one from a function::

    from compute.backtest.plugins import strategy
    from compute.indicators.registry import Param

    @strategy(name="sma_trend", version="1.0", warmup=lambda p: p["n"] - 1,
              params=(Param("n", int, 50, 2, 1000, "SMA window"),))
    def sma_trend(frame, params):
        c = frame["close"]
        sma = np.convolve(c, np.ones(params["n"]) / params["n"])[: c.size]
        return np.where(np.arange(c.size) >= params["n"] - 1, (c > sma) * 1.0, 0.0)

NumPy or JAX (return anything :func:`numpy.asarray` accepts). Third-party plugins are found by
entry point (group ``squall.strategies``) or by module path; that discovery does I/O and lives
outside ``compute`` (``serve_app/strategy_plugins.py``). Here: the interface and the built-ins.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from compute.backtest import strategies
from compute.backtest.engine import MAX_LEVERAGE
from compute.backtest.strategies import StrategyError, Values, check_params
from compute.core import inputs
from compute.indicators.registry import Param

Frame = Mapping[str, np.ndarray]
PositionsFn = Callable[[Frame, Mapping[str, Any]], npt.ArrayLike]
FRAME_KEYS = ("open", "high", "low", "close", "volume", "ts")


@runtime_checkable
class StrategyPlugin(Protocol):
    """What the services need of a strategy (built-in, plugin or compiled spec)."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def summary(self) -> str: ...

    @property
    def params(self) -> tuple[Param, ...]: ...

    @property
    def held_from_start(self) -> bool: ...

    def validate(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The full parameter dict, or :class:`StrategyError` saying what is valid."""
        ...

    def warmup(self, params: Mapping[str, Any] | None = None) -> int:
        """Bars before the first bar whose target can be nonzero."""
        ...

    def positions(self, frame: Frame, params: Mapping[str, Any] | None = None) -> np.ndarray:
        """Target weights ``(T,)`` float64 decided at each close."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-ready: name, version, summary, parameters (type, default, range)."""
        ...


def _no_problem(values: Values) -> str | None:
    return None


@dataclass(frozen=True)
class Plugin:
    """A strategy from a positions function, its parameters and its warm-up.

    ``held_from_start``: the positions are known before the data (buy-and-hold); the engine
    then enters at the first close (``run_backtest(..., hold_from_start=True)``).
    """

    name: str
    positions_fn: PositionsFn = field(repr=False)
    params: tuple[Param, ...] = ()
    warmup_fn: Callable[[Values], int] = field(default=lambda v: 0, repr=False)
    version: str = "0"
    summary: str = ""
    check: Callable[[Values], str | None] = field(default=_no_problem, repr=False)
    held_from_start: bool = False

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle by reference where possible (a built-in by name, a decorated module-level
        plugin by ``module.qualname``), so a Ray worker imports the plugin's own module instead
        of receiving code; otherwise field by field (cloudpickle then ships the functions)."""
        if BUILTINS.get(self.name) is self:
            return (builtin, (self.name,))
        fn = self.positions_fn
        module = sys.modules.get(getattr(fn, "__module__", "") or "")
        qualname = getattr(fn, "__qualname__", "")
        if module is not None and "<" not in qualname:
            target: Any = module
            for part in qualname.split("."):
                target = getattr(target, part, None)
            if target is self:
                return (_by_reference, (module.__name__, qualname))
        return (Plugin, tuple(getattr(self, f.name) for f in fields(self)))

    def validate(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return check_params(self.name, self.params, params, self.check)

    def warmup(self, params: Mapping[str, Any] | None = None) -> int:
        return int(self.warmup_fn(self.validate(params)))

    def required_bars(self, params: Mapping[str, Any] | None = None) -> int:
        """Candles for one traded bar (warm-up + 2, as for the built-ins)."""
        return self.warmup(params) + 2

    def positions(self, frame: Frame, params: Mapping[str, Any] | None = None) -> np.ndarray:
        values = self.validate(params)
        length = np.asarray(frame["close"]).shape[0]
        try:
            raw = self.positions_fn(frame, values)
        except StrategyError:
            raise
        except Exception as exc:  # a plugin's own bug: say whose it is
            raise StrategyError(
                f"strategy {self.name!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        return checked_positions(self.name, raw, length)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "summary": self.summary,
            "held_from_start": self.held_from_start,
            "params": [
                {"name": p.name, "type": p.kind.__name__, "default": p.default, "min": p.low,
                 "max": p.high, "doc": p.doc}
                for p in self.params
            ],
        }  # fmt: skip


def checked_positions(name: str, raw: npt.ArrayLike, length: int) -> np.ndarray:
    """A plugin's output as float64 ``(length,)`` within +-MAX_LEVERAGE, or StrategyError."""
    try:
        pos = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise StrategyError(f"strategy {name!r} returned non-numeric positions: {exc}") from None
    if pos.shape != (length,):
        raise StrategyError(
            f"strategy {name!r} returned positions of shape {pos.shape}, expected ({length},)"
        )
    bad = ~np.isfinite(pos) | (np.abs(pos) > MAX_LEVERAGE)
    if bad.any():
        at = int(np.argmax(bad))
        raise StrategyError(
            f"strategy {name!r}: position {pos[at]!r} at bar {at} is not a finite weight in "
            f"[-{MAX_LEVERAGE:g}, {MAX_LEVERAGE:g}] (use 0, not NaN, for flat)"
        )
    return pos + 0.0


def strategy(
    *,
    name: str,
    params: tuple[Param, ...] = (),
    warmup: Callable[[Values], int] = lambda v: 0,
    version: str = "0",
    summary: str = "",
    check: Callable[[Values], str | None] = _no_problem,
    held_from_start: bool = False,
) -> Callable[[PositionsFn], Plugin]:
    """Decorator: a positions function ``(frame, params) -> weights`` as a :class:`Plugin`."""

    def wrap(fn: PositionsFn) -> Plugin:
        doc = summary or (fn.__doc__ or "").strip().split("\n")[0]
        return Plugin(name, fn, params, warmup, version, doc, check, held_from_start)

    return wrap


def frame(
    open: npt.ArrayLike,
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    close: npt.ArrayLike,
    volume: npt.ArrayLike | None = None,
    ts: npt.ArrayLike | None = None,
) -> dict[str, np.ndarray]:
    """A validated frame of one series (what :meth:`StrategyPlugin.positions` receives)."""
    named: dict[str, Any] = {"open": open, "high": high, "low": low, "close": close}
    if volume is not None:
        named["volume"] = volume
    out = dict(zip(named, inputs.ohlc(True, **named), strict=True))
    if out["close"].ndim != 1:
        raise StrategyError(f"a frame holds one series, got shape {out['close'].shape}")
    if ts is not None:
        out["ts"] = inputs.unix_seconds(ts, out["close"].shape[0])
    return out


# --- the built-ins ----------------------------------------------------------------------------


def _builtin(name: str) -> Plugin:
    s = strategies.STRATEGIES[name]

    def run(f: Frame, values: Mapping[str, Any]) -> np.ndarray:
        return strategies.positions(name, values, f["open"], f["high"], f["low"], f["close"])

    return Plugin(
        name=name,
        positions_fn=run,
        params=s.params,
        warmup_fn=s.warmup,
        version="builtin",
        summary=s.summary,
        check=s.check,
        held_from_start=name in strategies.HELD_FROM_START,
    )


#: the built-in strategies as plugins (same names, parameters, warm-ups and positions)
BUILTINS: dict[str, Plugin] = {n: _builtin(n) for n in strategies.STRATEGIES}


def builtin(name: str) -> Plugin:
    """The built-in strategy ``name`` as a plugin."""
    if name not in BUILTINS:
        raise StrategyError(
            f"unknown strategy {name!r}; valid strategies:\n{strategies.describe()}"
        )
    return BUILTINS[name]


def _by_reference(module: str, qualname: str) -> Any:
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


__all__ = [
    "BUILTINS",
    "Frame",
    "Plugin",
    "StrategyPlugin",
    "builtin",
    "checked_positions",
    "frame",
    "strategy",
]
