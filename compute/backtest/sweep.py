"""Parameter sweeps in one compiled kernel: EMA-crossover long/flat over a whole (fast, slow) grid.

The strategy is elementwise except for the EMA recursion, and a grid shares its spans, so one
time-major loop evaluates every pair, laid out for XLA:CPU (measured, see
``docs/backtesting.md``, *Sweeps*):

1. **Segments.** The bars are cut into ``C`` stretches of ``L`` consecutive bars; loop step
   ``k`` handles bar ``c L + k`` of every segment ``c`` at once, so a step works on
   ``(fasts, slows, C)`` lanes and the loop runs ``L = T / C`` steps instead of ``T``.
2. **Exact EMAs per segment, never stored.** Each distinct span's EMA runs inside the loop as
   an ``(spans, C)`` state, with the operations of :func:`compute.indicators.kernels.ema` in the
   same
   order. The state entering each segment is found first by a cheap fixed-point iteration
   (:func:`_ema_carries`): guess it, run every segment's recursion from the guesses, take each
   segment's end state as the next one's entry state, repeat until no entry state changes.
   Segment 0 starts from the true (empty) state, so at the fixed point every segment's
   recursion is, by induction, bit-for-bit the sequential one; the EMA forgets a wrong guess
   within a few spans, so two passes normally suffice (and ``C + 1`` always do). The signals
   are therefore exactly those of :func:`compute.indicators.signals.ema_crossover`.
3. **Per-pair state, no ``(P, T)`` array.** Each step compares the fast and slow EMA states
   (held during bar ``t`` = signal at ``t - 1``, held during ``t - 1`` = signal at ``t - 2``),
   picks the bar's return from shared per-bar values (entry / hold / exit) and updates running
   sums (return, its square, squared loss, held bars + ``2**k`` x entries) and the segment's
   equity state as products, not logs: equity relative to the segment start, its minimum,
   equity over its running peak, and that ratio's minimum. Every state array is updated by its
   own small XLA fusion; the shared per-bar inputs are separate ``(L, C)`` arrays, never
   slices of one array (XLA:CPU runs a fusion that reads several slices of one array about
   ten times slower).
4. **Segments combined exactly.** Per segment, in logs (``C x P`` logs in all): growth ``s``,
   prefix maximum ``hi`` (>= 0), prefix minimum ``lo`` (<= 0) and worst drawdown ``d``.
   Folding left to right with ``base`` (log equity before the segment) and ``M`` (running peak
   before it): the segment's worst drawdown is ``min(d, base + lo - M)`` and
   ``M <- max(M, base + hi)``.

Accounting is that of :func:`compute.backtest.engine.run_backtest` with ``fixed`` sizing, fraction
1,
long/flat, fee + fixed slippage (no range slippage, no funding): a bar earns
``close/close[-1]`` while held, ``close / (open (1 + c))`` on entry and
``open/close[-1] x (1 - c)`` on exit, ``c = (fee_bps + slippage_bps) / 10,000`` -- exactly
vectorbt's ``from_signals(size=inf, fees=c)`` with orders at the next open. Sharpe and
volatility come from one-pass sums (agree with ``run_backtest`` to ~1e-9, not bitwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
import numpy.typing as npt

from compute.backtest.metrics import from_sums
from compute.core import inputs
from compute.core.errors import SpecError
from compute.core.jaxconf import F64, jax, jnp, lax, require_x64

BPS = 1e-4
MAX_PARAM_SETS = 10_000
MAX_SEGMENTS = 64  # C for long series: lanes = pairs x C stay in L2, L = T / C loop steps
MIN_SEGMENT_BARS = 4_096  # shorter series use fewer segments (a step costs ~0.3 us per fusion)
PAIR_CHUNK = 100  # grid points per kernel call (bounds the pairs x C state)
MAX_BARS = 2**26  # the count (held bars + unit x entries, unit > bars) stays exact in float64


def ema_grid(fasts: Sequence[int], slows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """All pairs ``fast < slow`` of two span lists, as two aligned int arrays."""
    pairs = [(int(f), int(s)) for f in fasts for s in slows if int(f) < int(s)]
    if not pairs:
        raise SpecError("the grid is empty: no pair with fast < slow")
    fast, slow = zip(*pairs, strict=True)
    return np.array(fast, np.int64), np.array(slow, np.int64)


def default_segments(length: int) -> int:
    """``C`` for a series of ``length`` bars: up to 64 segments of at least 4,096 bars."""
    return int(min(MAX_SEGMENTS, max(1, length // MIN_SEGMENT_BARS)))


class _Spans:
    """Per-span EMA constants as ``(S, 1)`` columns (broadcast over the segments)."""

    def __init__(self, spans: jax.Array, seeds: jax.Array) -> None:
        self.alpha = (2.0 / (spans + 1.0))[:, None]
        self.seed = seeds[:, None]
        self.seed_at = (spans - 1.0)[:, None]

    def step(self, y: jax.Array, x: jax.Array, t: jax.Array) -> jax.Array:
        """One bar of :func:`compute.indicators.kernels.ema`: the seed at bar ``n - 1``, then
        ``y + alpha (x - y)`` (NaN before the seed)."""
        return jnp.where(t == self.seed_at, self.seed, y + self.alpha * (x - y))


def _run_segments(
    x3: jax.Array, sp: _Spans, t0: jax.Array, y1: jax.Array, y2: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Every segment's EMA recursion from entry states ``(y1, y2)`` (the EMA at the bar before
    the segment and the one before that); returns the states at its last two bars."""

    def body(k: jax.Array, st: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        last, _ = st
        return sp.step(last, x3[k][None, :], t0 + k), last

    return lax.fori_loop(0, x3.shape[0], body, (y1, y2))


def _shift(a: jax.Array) -> jax.Array:
    """Segment ``c`` gets segment ``c - 1``'s value; segment 0 gets NaN (no EMA before bar 0)."""
    return jnp.concatenate([jnp.full((a.shape[0], 1), jnp.nan, F64), a[:, :-1]], axis=1)


def _same(a: jax.Array, b: jax.Array) -> jax.Array:
    """Bitwise-equal values, NaN equal to NaN."""
    return jnp.all((a == b) | (jnp.isnan(a) & jnp.isnan(b)))


def _ema_carries(
    x3: jax.Array, sp: _Spans, t0: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The exact EMA states entering each segment (at its bars -1 and -2), and the passes used.

    Guess: NaN before the seed, else the close before the segment. Then run every segment from
    its entry states and hand each segment's end states to the next, until nothing changes (at
    most ``C + 1`` passes: each pass makes at least one more leading segment exact).
    """
    segments = x3.shape[1]
    before = _shift(x3[-1:])  # the close of the bar before each segment
    guess1 = jnp.where(t0 - 1.0 < sp.seed_at, jnp.nan, before)
    guess2 = jnp.where(t0 - 2.0 < sp.seed_at, jnp.nan, before)

    def pending(st: tuple) -> jax.Array:
        i, c1, c2, e1, e2 = st
        return (i <= segments) & ~(_same(_shift(e1), c1) & _same(_shift(e2), c2))

    def again(st: tuple) -> tuple:
        i, _, _, e1, e2 = st
        c1, c2 = _shift(e1), _shift(e2)
        e1, e2 = _run_segments(x3, sp, t0, c1, c2)
        return i + 1, c1, c2, e1, e2

    e1, e2 = _run_segments(x3, sp, t0, guess1, guess2)
    start = (jnp.ones((), jnp.int32), guess1, guess2, e1, e2)
    passes, c1, c2, _, _ = lax.while_loop(pending, again, start)
    return c1, c2, passes


def entry_unit(length: int) -> float:
    """The power of two above ``length``: entries count in these units beside the held bars."""
    return float(2 ** int(length).bit_length())


def _bar_values(
    open3: jax.Array,
    close3: jax.Array,
    cost: jax.Array,
    length: jax.Array,
    unit: jax.Array,
    t0: jax.Array,
) -> list[jax.Array]:
    """Per bar, as ``(L, C)`` arrays like ``open3``/``close3``: the return on entry, hold and
    exit, and the count of an entry bar (``1 + unit``: held, and an entry) and a hold bar
    (``1``); all zero on bar 0 and on padding.
    """
    prev = jnp.concatenate([_shift(close3[-1:]), close3[:-1]], axis=0)
    prev = prev.at[0, 0].set(close3[0, 0])  # bar 0 has no previous close (and no return)
    t = t0 + jnp.arange(close3.shape[0], dtype=F64)[:, None]
    valid = (t >= 1.0) & (t < length)
    r_entry = close3 / (open3 * (1.0 + cost)) - 1.0
    r_hold = close3 / prev - 1.0
    r_exit = open3 / prev * (1.0 - cost) - 1.0
    rows = [jnp.where(valid, r, 0.0) for r in (r_entry, r_hold, r_exit)]
    rows.append(jnp.where(valid, 1.0 + unit, 0.0))  # entry: one held bar and one entry
    rows.append(jnp.where(valid, 1.0, 0.0))  # hold: one held bar
    return rows


@partial(jax.jit, static_argnames=("segments",))
def _evaluate(
    open_p: jax.Array,
    close_p: jax.Array,
    length: jax.Array,
    unit: jax.Array,
    cost: jax.Array,
    fast: tuple[jax.Array, jax.Array],
    slow: tuple[jax.Array, jax.Array],
    *,
    segments: int,
) -> tuple[jax.Array, ...]:
    """Sums and drawdown for the product grid of the ``fast`` and ``slow`` spans.

    ``open_p``/``close_p`` are padded to ``segments x L`` bars (``length`` real ones);
    ``fast``/``slow`` are ``(spans, seeds)`` pairs. Returns ``(nf, ns)`` arrays: sum of log
    returns, of returns, of squares, of squared losses, held bars + ``unit`` x entries, max
    drawdown (log), and the number of EMA passes (2 when every guess was already exact).
    """
    steps = close_p.shape[0] // segments
    x3 = close_p.reshape(segments, steps).T  # (L, C): bar c L + k at [k, c]
    t0 = (jnp.arange(segments, dtype=F64) * steps)[None, :]
    open3 = open_p.reshape(segments, steps).T
    rows = _bar_values(open3, x3, cost, length.astype(F64), unit, t0)
    spf, sps = _Spans(*fast), _Spans(*slow)
    both = _Spans(jnp.concatenate([fast[0], slow[0]]), jnp.concatenate([fast[1], slow[1]]))
    c1, c2, passes = _ema_carries(x3, both, t0)
    nf = fast[0].shape[0]
    zero = jnp.zeros((nf, slow[0].shape[0], segments), F64)
    one = jnp.ones_like(zero)

    def body(k: jax.Array, st: tuple) -> tuple:
        f1, s1, f2, s2, sr, sr2, sn2, count, level, under, worst, low = st
        re, rh, rx, ce, ch = (a[k][None, :] for a in rows)
        held = f1[:, None, :] > s1[None, :, :]  # during bar t: the signal at t - 1
        was = f2[:, None, :] > s2[None, :, :]  # during bar t - 1
        r = jnp.where(held, jnp.where(was, rh, re), jnp.where(was, rx, 0.0))
        sr, sr2 = sr + r, sr2 + r * r
        sn2 = sn2 + jnp.square(jnp.minimum(r, 0.0))
        count = count + jnp.where(held, jnp.where(was, ch, ce), 0.0)
        low = jnp.minimum(low, level * (1.0 + r))  # equity relative to the segment's start
        level = level * (1.0 + r)
        under = jnp.minimum(under * (1.0 + r), 1.0)  # equity / running peak in the segment
        worst = jnp.minimum(worst, under)
        x, t = x3[k][None, :], t0 + k
        return (spf.step(f1, x, t), sps.step(s1, x, t), f1, s1,
                sr, sr2, sn2, count, level, under, worst, low)  # fmt: skip

    init = (c1[:nf], c1[nf:], c2[:nf], c2[nf:], zero, zero, zero, zero, one, one, one, one)
    out = lax.fori_loop(0, steps, body, init)
    sr, sr2, sn2, count, level, under, worst, low = out[4:]
    top = jnp.where(under > 0.0, level / jnp.where(under > 0.0, under, 1.0), 1.0)

    def fold(carry: tuple, seg: tuple) -> tuple:
        base, peak, dd = carry  # log equity before the segment, its running peak, worst
        s, hi, d, lo = seg
        dd = jnp.minimum(dd, jnp.minimum(d, base + lo - peak))
        return (base + s, jnp.maximum(peak, base + hi), dd), None

    flat = jnp.zeros(zero.shape[:2], F64)
    segs = tuple(jnp.moveaxis(jnp.log(a), -1, 0) for a in (level, top, worst, low))
    (sg, _, mdd), _ = lax.scan(fold, (flat, flat, flat), segs)
    sums = [a.sum(axis=-1) for a in (sr, sr2, sn2, count)]
    return (sg, *sums, mdd, passes)


def _seeds(close: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """EMA seeds exactly as :func:`compute.core.rolling.seeded_ema`: ``x[0]`` + the sequential sum
    of deviations over the first ``n`` closes / ``n`` (NaN when ``n`` exceeds the series)."""
    dev = np.cumsum(close - close[0])
    length = close.shape[0]
    at = np.minimum(spans, length).astype(np.int64) - 1
    return np.where(spans <= length, close[0] + dev[at] / spans, np.nan)


def sweep(
    open: npt.ArrayLike,
    close: npt.ArrayLike,
    fast: npt.ArrayLike,
    slow: npt.ArrayLike,
    *,
    fee_bps: float = 0.0,
    slippage_bps: float = 0.0,
    periods_per_year: float = 365.0,
    segments: int | None = None,
    chunk: int = PAIR_CHUNK,
    threads: int = 1,
) -> dict[str, np.ndarray]:
    """EMA-crossover long/flat (all-in, next-open execution) for every pair ``(fast[i],
    slow[i])``: ``{metric: (P,) array}`` with total_return, cagr, annual_volatility, sharpe,
    sortino, max_drawdown, calmar (NaN where undefined), exposure and trades.

    The signal is :func:`compute.indicators.signals.ema_crossover` with ``long_only=True`` (EMAs
    seeded
    with the SMA of their first ``n`` closes); each pair equals ``run_backtest`` of that signal
    with ``BacktestConfig(fee_bps=..., slippage_bps=...)``. At most 10,000 pairs. ``segments``
    defaults to :func:`default_segments`; ``threads`` > 1 runs the grid's kernel calls
    (chunks of about ``chunk`` pairs, at least ``threads`` of them) from that many threads.
    """
    require_x64()
    o, c = inputs.ohlc(open=open, close=close)
    if o.ndim != 1 or o.shape[0] < 2:
        raise SpecError(f"need one series of at least 2 candles, got shape {o.shape}")
    f = np.asarray(fast)
    s = np.asarray(slow)
    if f.ndim != 1 or f.shape != s.shape or f.size == 0:
        raise SpecError(
            f"fast and slow must be non-empty 1-D arrays of one length: {f.shape}, {s.shape}"
        )
    if f.size > MAX_PARAM_SETS:
        raise SpecError(f"at most {MAX_PARAM_SETS} parameter sets per sweep, got {f.size}")
    f = np.asarray(inputs.period("fast", f)).reshape(-1)
    s = np.asarray(inputs.period("slow", s)).reshape(-1)
    inputs.require_less("fast", f, "slow", s)
    for name, value in (("fee_bps", fee_bps), ("slippage_bps", slippage_bps)):
        if not (np.isfinite(value) and 0.0 <= value <= 1_000.0):
            raise SpecError(f"{name} must be in [0, 1000], got {value!r}")
    if not 1 <= int(threads) <= 64:
        raise SpecError(f"threads must be in [1, 64], got {threads!r}")
    length = c.shape[0]
    if length > MAX_BARS:
        raise SpecError(f"at most {MAX_BARS:,} candles per sweep, got {length:,}")
    segs = default_segments(length) if segments is None else int(segments)
    if not 1 <= segs <= length:
        raise SpecError(f"segments must be in [1, {length}], got {segments!r}")
    fast_u, fast_at = np.unique(f, return_inverse=True)
    slow_u, slow_at = np.unique(s, return_inverse=True)
    padded = -(-length // segs) * segs
    o_p, c_p = jnp.asarray(inputs.pad_time(o, padded)), jnp.asarray(inputs.pad_time(c, padded))
    cost = jnp.asarray((fee_bps + slippage_bps) * BPS, F64)
    n_bars, unit = jnp.asarray(length), entry_unit(length)
    slow_arg = (jnp.asarray(slow_u, F64), jnp.asarray(_seeds(c, slow_u)))
    # the product grid (fast x slow), a few fasts per call so the lanes stay in cache
    per_call = max(1, min(chunk // slow_u.size, -(-fast_u.size // int(threads))))
    calls = []
    for start in range(0, fast_u.size, per_call):
        ids = fast_u[start : start + per_call]
        ids = np.concatenate([ids, np.full(per_call - ids.size, ids[-1])])  # one shape
        calls.append((jnp.asarray(ids, F64), jnp.asarray(_seeds(c, ids))))

    def run(fast_arg: tuple[jax.Array, jax.Array]) -> np.ndarray:
        res = _evaluate(o_p, c_p, n_bars, jnp.asarray(unit), cost, fast_arg, slow_arg,
                        segments=segs)  # fmt: skip
        return np.stack([np.asarray(a) for a in res[:-1]])

    if threads > 1 and len(calls) > 1:
        with ThreadPoolExecutor(max_workers=int(threads)) as pool:
            blocks = list(pool.map(run, calls))
    else:
        blocks = [run(a) for a in calls]
    grid = np.concatenate(blocks, axis=1)  # (6, fasts, slows)
    sg, sr, sr2, sn2, count, mdd = grid[:, fast_at, slow_at]
    entries = np.floor(count / unit)
    n = length - 1
    out = from_sums(n, sg, sr, sr2, sn2, mdd, periods_per_year)
    out["exposure"] = (count - entries * unit) / n
    out["trades"] = entries.astype(np.int64)
    out["fast"] = np.asarray(f, np.int64).reshape(-1)
    out["slow"] = np.asarray(s, np.int64).reshape(-1)
    return out
