"""A spec compiled to target weights: indicators once, rules vectorised, one ``lax.scan``.

:func:`spec_positions` is what a service calls for one series: it binds the spec's parameters,
evaluates every indicator the spec reads in one call of
:func:`compute.indicators.pipeline.compute_indicators`, then runs one jitted function that
evaluates the rules on whole series (:mod:`compute.strategy.program`) and steps the state
machine (:mod:`compute.strategy.machine`) over the bars in a single ``lax.scan`` - no Python
loop per bar. The compiled function is cached per program (the rules' structure, constants
as arguments) and padded length, so a grid of thresholds reuses one compilation.

The targets go to :func:`compute.backtest.engine.run_backtest` like a built-in strategy's
positions (signals, not ``hold_from_start``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from compute.core import inputs
from compute.core.errors import InputDataError
from compute.core.jaxconf import F64, jax, jnp, lax, require_x64
from compute.indicators.pipeline import compute_indicators
from compute.indicators.registry import Request
from compute.strategy import machine
from compute.strategy.program import Lowered, Program, fires, lower, series_reader
from compute.strategy.spec import RULE_FIELDS, BoundSpec, StrategySpec

Array = jax.Array
COLUMNS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class SpecRun:
    """Targets of one series: ``positions`` (float64 target weights decided at each close),
    ``reasons`` (int8 :data:`compute.strategy.machine.REASONS` code of the exit decided at that
    close, 0 when none), the bound spec and its warm-up."""

    positions: np.ndarray
    reasons: np.ndarray
    bound: BoundSpec

    @property
    def warmup(self) -> int:
        return self.bound.warmup


def bind(spec: StrategySpec | BoundSpec, params: Mapping[str, Any] | None = None) -> BoundSpec:
    """``spec`` bound to ``params`` (a BoundSpec passes through when no params are given)."""
    if isinstance(spec, BoundSpec):
        return spec if not params else spec.spec.bind(params)
    return spec.bind(params)


def stop_kinds(bound: BoundSpec) -> tuple[int, int, int]:
    kinds = {"pct": machine.PCT, "atr": machine.ATR}
    return tuple(  # type: ignore[return-value]
        kinds[bound.stops[f].kind] if f in bound.stops else machine.OFF for f in machine.STOPS
    )


def stop_params(bound: BoundSpec) -> machine.Params:
    def val(f: str) -> float:
        return bound.stops[f].value if f in bound.stops else 0.0

    w = bound.weights
    return machine.Params(
        *(jnp.asarray(v, F64) for v in (w["long_weight"], w["short_weight"], val("stop_loss"),
                                        val("take_profit"), val("trailing_stop")))
    )  # fmt: skip


def atr_columns(bound: BoundSpec) -> tuple[str | None, str | None, str | None]:
    """The pipeline column of each stop's ATR (None when the stop is not ATR-based)."""
    out = []
    for f in machine.STOPS:
        s = bound.stops.get(f)
        req = s.atr_request if s is not None else None
        out.append(req.column("atr") if req is not None else None)
    return out[0], out[1], out[2]


def leaf_arrays(
    low: Lowered, columns: Mapping[str, np.ndarray], candles: Mapping[str, np.ndarray]
) -> list[np.ndarray]:
    """Each leaf as a float64 series: candle columns, indicator outputs (labels' -1 -> NaN)."""
    out = []
    for name, is_label in zip(low.leaves, low.labels, strict=True):
        x = candles[name] if name in COLUMNS else columns[name]
        x = np.asarray(x, dtype=np.float64)
        out.append(np.where(x < 0, np.nan, x) if is_label else x)
    return out


Kernel = Callable[..., tuple[Array, Array]]


@functools.lru_cache(maxsize=128)
def _kernel(programs: tuple[Program | None, ...], kinds: tuple[int, int, int]) -> Kernel:
    """The jitted function of one program set: leaves, constants, prices, ATRs -> targets."""

    def run(
        leaves: tuple[Array, ...], consts: Array, o: Array, h: Array, lo: Array,
        atrs: tuple[Array, Array, Array], params: machine.Params, warm: Array,
    ) -> tuple[Array, Array]:  # fmt: skip
        read = series_reader(leaves)
        le, lx, se, sx = (fires(p, read, consts, o) for p in programs)
        ok = jnp.arange(o.shape[-1]) >= warm
        bars = machine.Bar(o, h, lo, *atrs, le, lx, se, sx, ok)

        def body(s: machine.State, b: machine.Bar) -> tuple[machine.State, tuple]:
            return machine.step(s, b, params, kinds)

        _, (target, reason) = lax.scan(body, machine.flat_state(), bars)
        return target, reason

    return jax.jit(run)


def run_program(
    low: Lowered,
    kinds: tuple[int, int, int],
    leaves: list[np.ndarray],
    prices: Mapping[str, np.ndarray],
    atrs: list[np.ndarray | None],
    params: machine.Params,
    warmup: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the compiled state machine of ``low`` on one series (padded to a bucketed length)."""
    length = prices["open"].shape[0]
    padded = inputs.bucket(length)
    nan = np.full(length, np.nan)
    programs = tuple(low.programs.get(f) for f in RULE_FIELDS)
    fn = _kernel(programs, kinds)
    target, reason = fn(
        tuple(inputs.pad_time(x, padded) for x in leaves),
        jnp.asarray(np.asarray(low.consts, dtype=np.float64)),
        *(inputs.pad_time(prices[k], padded) for k in ("open", "high", "low")),
        tuple(inputs.pad_time(nan if a is None else a, padded) for a in atrs),
        params,
        jnp.asarray(warmup),
    )
    return np.asarray(target)[:length], np.asarray(reason)[:length]


def candle_arrays(candles: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Validated float64 OHLC(V) arrays and int64 ``ts`` of one series."""
    names = [k for k in COLUMNS if candles.get(k) is not None]
    missing = [k for k in ("open", "high", "low", "close") if k not in names]
    if missing:
        raise InputDataError(f"a spec strategy needs candles with {', '.join(missing)}")
    arrays = dict(zip(names, inputs.ohlc(**{k: candles[k] for k in names}), strict=True))
    if arrays["close"].ndim != 1:
        raise InputDataError(f"one series expected, got shape {arrays['close'].shape}")
    if candles.get("ts") is not None:
        arrays["ts"] = inputs.unix_seconds(candles["ts"], arrays["close"].shape[0])
    return arrays


def indicator_columns(
    requests: tuple[Request, ...], arrays: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The columns of ``requests`` (e.g. :meth:`BoundSpec.indicator_requests`), from one
    pipeline call."""
    if not requests:
        return {}
    get = arrays.get
    return compute_indicators(
        requests, get("open"), get("high"), get("low"), get("close"), get("volume"), get("ts")
    )


def spec_positions(
    spec: StrategySpec | BoundSpec,
    candles: Mapping[str, Any],
    params: Mapping[str, Any] | None = None,
) -> SpecRun:
    """Target weights of ``spec`` (bound to ``params``) on one series of candles.

    ``candles`` maps ``open``, ``high``, ``low``, ``close`` (and ``volume``/``ts`` when an
    indicator reads them) to ``(T,)`` arrays. Raises ``RuleError`` for a bad parameter set and
    ``InputDataError`` for bad candles.
    """
    require_x64()
    bound = bind(spec, params)
    arrays = candle_arrays(candles)
    columns = indicator_columns(bound.indicator_requests(), arrays)
    low = lower(bound.spec.rules, bound.requests, bound.values)
    leaves = leaf_arrays(low, columns, arrays)
    atrs = [columns[c] if c is not None else None for c in atr_columns(bound)]
    target, reason = run_program(
        low, stop_kinds(bound), leaves, arrays, atrs, stop_params(bound), bound.warmup
    )
    return SpecRun(target, reason, bound)
