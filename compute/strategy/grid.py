"""A spec over a parameter grid: one batched, segmented kernel for the whole grid.

``ema:{fast} > ema:{slow}`` with a grid of ``fast`` x ``slow`` values: every parameter set is
bound and validated first (:func:`expand`), then :func:`sweep_spec` evaluates them together:

1. **Indicators once.** The union of every set's indicator requests goes through one
   :func:`compute.indicators.pipeline.compute_indicators` call (its recursions share loops), so
   ten distinct EMA spans cost ten EMAs, not a hundred pairs of them.
2. **Rules for all sets at once.** The programs (:mod:`compute.strategy.program`) are the same
   for every set - placeholders became leaf indices and constant slots - so one jitted,
   elementwise evaluation gathers each set's leaf columns and writes every set's entry and exit
   flags, in the kernel's time-major segmented layout, as one ``int8`` per bar and set.
3. **One segmented loop** (the layout of :mod:`compute.backtest.sweep`): the bars are cut
   into ``C`` segments of ``L`` bars and loop step ``k`` runs bar ``c L + k`` of every segment
   and every set (``sets x C`` lanes): the state machine of :mod:`compute.strategy.machine`
   (stops included) and the accounting's running sums. The state entering each segment is found
   by fixed-point iteration: guess flat, run, hand each segment's end state to the next, repeat
   until no entry state changes (bitwise); segment 0 starts from the true state, so at the fixed
   point every segment reproduces the sequential run exactly. A trade that ends inside a segment
   makes the guess irrelevant from there on, so two passes normally suffice.

The fused kernel covers what :func:`compute.backtest.sweep.sweep` covers: **long/flat, all-in**
(``long_weight`` 1, no short rules; stops and exits allowed), fee + fixed slippage, no funding,
next-open execution - there a bar's return is one of three shared per-bar values (entry, hold,
exit) and the lanes need no equity state. Any other spec (shorts, fractional weights) takes the
per-set path: :func:`compute.strategy.compiler.spec_positions` and
:func:`compute.backtest.engine.run_backtest` for each set (``path: "per_set"`` in the result).
Metrics agree with ``run_backtest`` to ~1e-9 (one-pass sums), trades exactly.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from compute.backtest.engine import BacktestConfig, run_backtest
from compute.backtest.metrics import from_sums
from compute.backtest.sweep import (
    MAX_BARS,
    MAX_PARAM_SETS,
    _bar_values,  # the sweep kernel's per-bar returns (entry / hold / exit), shared on purpose
    entry_unit,
)
from compute.core import inputs
from compute.core.errors import SpecError
from compute.core.jaxconf import F64, jax, jnp, lax, require_x64
from compute.strategy import machine
from compute.strategy.compiler import (
    atr_columns,
    candle_arrays,
    indicator_columns,
    leaf_arrays,
    spec_positions,
    stop_kinds,
)
from compute.strategy.program import Program, lower, truth
from compute.strategy.rules import Lag, RuleError, walk
from compute.strategy.spec import BoundSpec, StrategySpec

Array = jax.Array
MAX_SEGMENTS = 32
#: loop steps per iteration of the segmented loop: 2 measured ~1.5x faster than 1 on 1M bars x
#: 100 sets (XLA fuses two steps' updates of each state array), 3-8 slower than 2
UNROLL = 2
MIN_SEGMENT_BARS = 4_096
METRICS = ("total_return", "cagr", "annual_volatility", "sharpe", "sortino", "max_drawdown",
           "calmar", "exposure")  # fmt: skip


def spec_segments(length: int) -> int:
    """``C`` for a spec sweep: up to 32 segments of at least 4,096 bars. Fewer than the EMA
    sweep's 64: its lanes carry more state per set (measured on 1M bars x 100 sets: 32 and 48
    segments ~1.05 s, 64 ~1.3 s, 16 ~2 s)."""
    return int(min(MAX_SEGMENTS, max(1, length // MIN_SEGMENT_BARS)))


def expand(
    spec: StrategySpec, grid: Mapping[str, Sequence[float]], *, skip_invalid: bool = False
) -> tuple[list[BoundSpec], list[dict[str, Any]]]:
    """The cartesian product of ``grid`` (placeholder -> values; the spec's ``params`` fill
    the rest), bound and validated: ``(sets, rejected)``.

    An invalid set raises its :class:`~compute.strategy.rules.RuleError` unless
    ``skip_invalid``, which lists it in ``rejected`` (``{"params", "error"}``) instead.
    """
    unknown = sorted(set(grid) - set(spec.placeholders))
    if unknown:
        raise RuleError(
            f"grid parameter(s) {unknown} are not placeholders of the spec",
            token=unknown[0],
            position=0,
            valid=spec.placeholders,
            field="grid",
        )
    names = list(grid)
    values = [list(grid[n]) for n in names]
    count = math.prod(len(v) for v in values)
    if count == 0 or count > MAX_PARAM_SETS:
        raise SpecError(f"a grid has 1 to {MAX_PARAM_SETS} parameter sets, got {count}")
    sets, rejected = [], []
    for combo in itertools.product(*values):
        params = dict(zip(names, combo, strict=True))
        try:
            sets.append(spec.bind(params))
        except RuleError as exc:
            if not skip_invalid:
                raise
            rejected.append({"params": params, "error": exc.as_dict()})
    if not sets:
        raise SpecError(f"every parameter set of the grid is invalid ({len(rejected)} sets)")
    return sets, rejected


def fused(sets: Sequence[BoundSpec]) -> bool:
    """Whether the fused kernel covers these sets (long/flat all-in; see the module doc)."""
    rules = sets[0].spec.rules
    future = any(isinstance(n, Lag) and n.n < 0 for t in rules.values() for n in walk(t))
    return (
        "short_entry" not in rules
        and not future
        and all(s.weights["long_weight"] == 1.0 for s in sets)
    )


# --- the fused kernel -------------------------------------------------------------------------


def _shift(a: Array) -> Array:
    """Segment ``c`` gets segment ``c - 1``'s value (last axis); segment 0 gets the flat
    state's (0)."""
    return jnp.concatenate([jnp.zeros_like(a[..., :1]), a[..., :-1]], axis=-1)


def _same(a: tuple[Array, ...], b: tuple[Array, ...]) -> Array:
    ok = jnp.asarray(True)
    for x, y in zip(a, b, strict=True):
        ok = ok & jnp.all((x == y) | (jnp.isnan(x) & jnp.isnan(y)))
    return ok


@functools.lru_cache(maxsize=32)
def _flags_fn(entry: Program, exit_: Program | None, halo: int) -> Any:
    """Jitted: leaves (S, C, halo + L), leaf indices (n_leaves, P), constants (n_consts, P),
    warm-ups (P,), bar numbers (C, L) -> int8 flags (L, P, C), time-major: bit 0 long entry
    (from the set's warm-up on), bit 1 long exit."""

    def run(u: Array, idx: Array, consts: Array, warm: Array, t: Array) -> Array:
        steps = t.shape[-1]

        def read(j: int, back: int) -> Array:
            rows = u[:, :, halo - back : halo - back + steps]  # (S, C, L)
            return jnp.take(rows, idx[j], axis=0)  # (P, C, L)

        const = [consts[i][:, None, None] for i in range(consts.shape[0])]
        le = truth(entry, read, const)[0] & (t[None] >= warm[:, None, None])
        flags = le.astype(jnp.int8)
        if exit_ is not None:
            flags = flags | (truth(exit_, read, const)[0].astype(jnp.int8) << 1)
        return jnp.transpose(flags, (2, 0, 1))

    return jax.jit(run)


@functools.lru_cache(maxsize=32)
def _loop(kinds: tuple[int, int, int], segments: int) -> Any:
    """Jitted: flags (L, P, C), per-bar prices and ATRs (L, 1, C), per-bar return rows
    (L, 1, C), params (P, 1) -> per-lane sums, segment stats, passes.

    A segment's entry state is the machine's state and ``was`` (held during the previous bar:
    at a segment's first bar, the side held during the previous segment's last bar). Without
    stops the long/flat machine reduces to one boolean: held next = ``(held and not exit) or
    (not held and entry)`` (:func:`compute.strategy.machine.step` with stops off and no short
    rules; the tests hold the two equal through :func:`compute.strategy.compiler.spec_positions`).
    """
    simple = kinds == (machine.OFF, machine.OFF, machine.OFF)

    def run(flags: Array, prices: tuple[Array, ...], rows: tuple[Array, ...],
            params: machine.Params) -> tuple[Array, ...]:  # fmt: skip
        steps, sets = flags.shape[0], flags.shape[1]
        shape = (sets, segments)
        true = jnp.ones(shape, bool)

        def fsm(k: Array, s: Any) -> Any:
            f = flags[k]
            le, lx = (f & 1) != 0, (f & 2) != 0
            if simple:
                return ((s[0] & ~lx) | (~s[0] & le),)
            o, h, lo, a_sl, a_tp, a_tr = (x[k] for x in prices)
            bar = machine.Bar(o, h, lo, a_sl, a_tp, a_tr, le, lx, ~true, ~true, true)
            return machine.step(s, bar, params, kinds)[0]

        def held_of(s: Any) -> Array:
            return s[0] if simple else s.side > 0.0

        def plain(entry: tuple) -> tuple:
            def body(k: Array, st: tuple) -> tuple:
                return fsm(k, st[0]), held_of(st[0])

            return lax.fori_loop(0, steps, body, entry, unroll=UNROLL)

        def full(entry: tuple) -> tuple:
            zero, one = jnp.zeros(shape, F64), jnp.ones(shape, F64)

            def body(k: Array, st: tuple) -> tuple:
                s, was, sr, sr2, sn2, count, level, under, worst, low = st
                re, rh, rx, ce, ch = (r[k] for r in rows)
                held = held_of(s)  # during bar t: decided at t - 1
                r = jnp.where(held, jnp.where(was, rh, re), jnp.where(was, rx, 0.0))
                sr, sr2 = sr + r, sr2 + r * r
                sn2 = sn2 + jnp.square(jnp.minimum(r, 0.0))
                count = count + jnp.where(held, jnp.where(was, ch, ce), 0.0)
                low = jnp.minimum(low, level * (1.0 + r))
                level = level * (1.0 + r)
                under = jnp.minimum(under * (1.0 + r), 1.0)
                worst = jnp.minimum(worst, under)
                return (fsm(k, s), held, sr, sr2, sn2, count, level, under, worst, low)

            init = (*entry, zero, zero, zero, zero, one, one, one, one)
            return lax.fori_loop(0, steps, body, init, unroll=UNROLL)

        def handed(end: tuple) -> tuple:
            state, was = end
            moved = tuple(_shift(x) for x in state)
            return (machine.State(*moved) if not simple else moved), _shift(was)

        def key(e: tuple) -> tuple[Array, ...]:
            return tuple(x.astype(F64) for x in (*e[0], e[1]))

        flat = (~true,) if simple else machine.flat_state(shape)
        first = handed(plain((flat, ~true)))

        def pending(st: tuple) -> Array:
            i, entry, out = st
            return (i <= segments) & ~_same(key(entry), key(handed((out[0], out[1]))))

        def again(st: tuple) -> tuple:
            i, _, out = st
            entry = handed((out[0], out[1]))
            return i + 1, entry, full(entry)

        i, _, out = lax.while_loop(pending, again, (jnp.ones((), jnp.int32), first, full(first)))
        return (*out[2:], i + 1)

    return jax.jit(run)


_bar_rows = jax.jit(_bar_values)


def _fold(level: np.ndarray, under: np.ndarray, worst: np.ndarray, low: np.ndarray) -> tuple:
    """Total log growth and worst log drawdown from per-segment stats (P, C), in order."""
    with np.errstate(divide="ignore", invalid="ignore"):
        top = np.where(under > 0.0, level / np.where(under > 0.0, under, 1.0), 1.0)
        s, hi, d, lo = (np.log(a) for a in (level, top, worst, low))
    base = np.zeros(level.shape[0])
    peak = np.zeros(level.shape[0])
    dd = np.zeros(level.shape[0])
    for c in range(level.shape[1]):
        dd = np.minimum(dd, np.minimum(d[:, c], base + lo[:, c] - peak))
        peak = np.maximum(peak, base + hi[:, c])
        base = base + s[:, c]
    return base, dd


def _segmented(x: np.ndarray, segments: int, steps: int, halo: int = 0) -> np.ndarray:
    """``(..., T)`` padded to ``segments x steps`` bars -> ``(..., segments, halo + steps)``:
    bar ``c L + k`` at ``[..., c, halo + k]``, with the ``halo`` bars before each segment in
    front (NaN before bar 0). A reshape when ``halo`` is 0."""
    body = x.reshape(*x.shape[:-1], segments, steps)
    if not halo:
        return body
    before = np.full((*x.shape[:-1], segments, halo), np.nan)
    take = min(halo, steps)
    before[..., 1:, halo - take :] = body[..., :-1, steps - take :]
    if halo > steps:  # a lag longer than a segment reaches further back
        flat = np.concatenate([np.full((*x.shape[:-1], halo), np.nan), x], axis=-1)
        idx = np.arange(segments)[:, None] * steps + np.arange(halo)[None, :]
        before = flat[..., idx]
    return np.concatenate([before, body], axis=-1)


def _time_major(x: np.ndarray) -> np.ndarray:
    """``(..., C, L)`` -> ``(L, ..., C)``: the loop reads one step as one contiguous slice."""
    return np.ascontiguousarray(np.moveaxis(x, -1, 0))


def _fused_sweep(
    sets: Sequence[BoundSpec], arrays: Mapping[str, np.ndarray], cost: float, ppy: float,
    segments: int | None, chunk: int,
) -> dict[str, np.ndarray]:  # fmt: skip
    length = arrays["close"].shape[0]
    lowered = [lower(b.spec.rules, b.requests, b.values) for b in sets]
    programs = lowered[0].programs
    requests = {(r.spec.name, r.values): r for b in sets for r in b.indicator_requests()}
    columns = indicator_columns(tuple(requests.values()), arrays)
    names = sorted({n for low in lowered for n in low.leaves})
    where = {n: i for i, n in enumerate(names)}
    leaf_rows: dict[str, np.ndarray] = {}
    for low in lowered:
        for n, arr in zip(low.leaves, leaf_arrays(low, columns, arrays), strict=True):
            leaf_rows.setdefault(n, arr)
    segs = spec_segments(length) if segments is None else int(segments)
    if not 1 <= segs <= length:
        raise SpecError(f"segments must be in [1, {length}], got {segments!r}")
    steps = -(-length // segs)
    padded = steps * segs
    halo = max(low.max_lag for low in lowered)
    u = inputs.aligned_empty((len(names), padded))
    for i, n in enumerate(names):  # padded by repeating the last bar (inputs.pad_time)
        u[i, :length] = leaf_rows[n]
        u[i, length:] = leaf_rows[n][-1]
    u3 = jnp.asarray(_segmented(u, segs, steps, halo))
    t = jnp.asarray(np.arange(padded, dtype=np.float64).reshape(segs, steps))
    kinds = stop_kinds(sets[0])
    atr_names = atr_columns(sets[0])
    price_rows = [inputs.pad_time(arrays[k], padded) for k in ("open", "high", "low")]
    price_rows += [
        inputs.pad_time(columns[a], padded) if a else np.full(padded, np.nan) for a in atr_names
    ]
    prices = tuple(
        jnp.asarray(_time_major(_segmented(p[None, :], segs, steps))) for p in price_rows
    )
    o3 = prices[0][:, 0, :]
    c3 = jnp.asarray(_time_major(inputs.pad_time(arrays["close"], padded).reshape(segs, steps)))
    unit = entry_unit(length)
    t0 = jnp.asarray(np.arange(segs)[None, :] * steps, F64)
    per_bar = _bar_rows(
        o3, c3, jnp.asarray(cost, F64), jnp.asarray(float(length)), jnp.asarray(unit), t0
    )
    rows = tuple(r[:, None, :] for r in per_bar)
    flags_of = _flags_fn(programs["long_entry"], programs.get("long_exit"), halo)
    loop = _loop(kinds, segs)
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("sr", "sr2", "sn2", "count", "level",
                                                         "under", "worst", "low")}  # fmt: skip
    for lo in range(0, len(sets), chunk):
        part = list(range(lo, min(lo + chunk, len(sets))))
        part += [part[-1]] * (chunk - len(part))  # one shape, one compilation
        idx = np.array([[where[lowered[i].leaves[j]] for i in part]
                        for j in range(len(lowered[0].leaves))], np.int32)  # fmt: skip
        n_consts = len(lowered[0].consts)
        consts = np.array([[lowered[i].consts[j] for i in part] for j in range(n_consts)])
        consts = consts.reshape(n_consts, len(part))
        warm = np.array([sets[i].warmup for i in part], F64)
        flags = flags_of(u3, jnp.asarray(idx), jnp.asarray(consts), jnp.asarray(warm), t)
        params = _params([sets[i] for i in part])
        res = loop(flags, prices, rows, params)
        real = min(chunk, len(sets) - lo)
        for name, value in zip(out, res[:-1], strict=True):
            out[name].append(np.asarray(value)[:real])
    st = {k: np.concatenate(v) for k, v in out.items()}
    growth, mdd = _fold(st["level"], st["under"], st["worst"], st["low"])
    sums = {k: st[k].sum(axis=1) for k in ("sr", "sr2", "sn2", "count")}
    entries = np.floor(sums["count"] / unit)
    n_ret = length - 1
    metrics = from_sums(n_ret, growth, sums["sr"], sums["sr2"], sums["sn2"], mdd, ppy)
    metrics["exposure"] = (sums["count"] - entries * unit) / n_ret
    metrics["trades"] = entries.astype(np.int64)
    return metrics


def _params(sets: Sequence[BoundSpec]) -> machine.Params:
    def col(get: Any) -> Array:
        return jnp.asarray(np.array([get(b) for b in sets], F64)[:, None])

    def stop(name: str) -> Any:
        return lambda b: b.stops[name].value if name in b.stops else 0.0

    return machine.Params(col(lambda b: b.weights["long_weight"]),
                          col(lambda b: b.weights["short_weight"]),
                          col(stop("stop_loss")), col(stop("take_profit")),
                          col(stop("trailing_stop")))  # fmt: skip


# --- the public entry point -------------------------------------------------------------------


def sweep_spec(
    spec: StrategySpec,
    sets: Sequence[BoundSpec] | Mapping[str, Sequence[float]],
    candles: Mapping[str, Any],
    *,
    fee_bps: float = 0.0,
    slippage_bps: float = 0.0,
    periods_per_year: float = 365.0,
    segments: int | None = None,
    chunk: int = 100,
) -> dict[str, Any]:
    """Metrics of ``spec`` for every parameter set: ``{metric: (P,) array}`` with
    total_return, cagr, annual_volatility, sharpe, sortino, max_drawdown, calmar (NaN where
    undefined), exposure, trades; ``params`` (one dict per set) and ``path`` (``"fused"`` or
    ``"per_set"``, see the module docstring). ``sets`` is a grid (placeholder -> values, every
    set must be valid) or bound sets from :func:`expand`. Accounting: next-open, all-in for
    the fused path; ``BacktestConfig(fee_bps, slippage_bps, periods_per_year)`` otherwise.
    """
    require_x64()
    bound = expand(spec, sets)[0] if isinstance(sets, Mapping) else list(sets)
    if not bound or len(bound) > MAX_PARAM_SETS:
        raise SpecError(f"1 to {MAX_PARAM_SETS} parameter sets per sweep, got {len(bound)}")
    for name, value in (("fee_bps", fee_bps), ("slippage_bps", slippage_bps)):
        if not (np.isfinite(value) and 0.0 <= value <= 1_000.0):
            raise SpecError(f"{name} must be in [0, 1000], got {value!r}")
    arrays = candle_arrays(candles)
    length = arrays["close"].shape[0]
    if not 2 <= length <= MAX_BARS:
        raise SpecError(f"a sweep needs 2 to {MAX_BARS:,} candles, got {length:,}")
    if not 1 <= int(chunk) <= MAX_PARAM_SETS:
        raise SpecError(f"chunk must be in [1, {MAX_PARAM_SETS}], got {chunk!r}")
    if fused(bound):
        cost = (fee_bps + slippage_bps) * 1e-4
        out: dict[str, Any] = {
            **_fused_sweep(bound, arrays, cost, periods_per_year, segments, int(chunk)),
            "path": "fused",
        }
    else:
        cfg = BacktestConfig(
            fee_bps=fee_bps, slippage_bps=slippage_bps, periods_per_year=periods_per_year
        )
        out = {**_per_set(bound, arrays, cfg), "path": "per_set"}
    out["params"] = [dict(b.values) for b in bound]
    return out


def _per_set(
    sets: Sequence[BoundSpec], arrays: Mapping[str, np.ndarray], config: BacktestConfig
) -> dict[str, np.ndarray]:
    labels = np.zeros(arrays["close"].shape[0], np.int8)
    flat: dict[str, Any] = {"vol": labels, "trend": labels}
    rows: dict[str, list[float]] = {k: [] for k in (*METRICS, "trades")}
    ts = arrays.get("ts")
    if ts is None:
        ts = np.arange(arrays["close"].shape[0], dtype=np.int64)
    for b in sets:
        pos = spec_positions(b, arrays).positions
        m = run_backtest(ts, arrays["open"], arrays["high"], arrays["low"], arrays["close"], pos,
                         config, regimes=flat).metrics  # fmt: skip
        for k, values in rows.items():
            v = m.get(k)
            values.append(np.nan if v is None else float(v))
    out = {k: np.asarray(v) for k, v in rows.items()}
    out["trades"] = out["trades"].astype(np.int64)
    return out


__all__ = ["expand", "fused", "sweep_spec"]
