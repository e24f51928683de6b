"""The backtest engine: target positions -> fills at the next bar's open -> equity, trades, metrics.

Timing (the one rule that prevents look-ahead): ``target_position[t]`` is decided at the close
of bar ``t`` and executes at the **open of bar t + 1**; a target set on the last bar opens
nothing. The position is kept in units (no rebalancing) until the sized target weight changes.

Accounting per bar ``t`` (one step of a ``lax.scan``; ``docs/backtesting.md`` has the algebra):

1. equity at the open ``E_o = cash + q * open[t]``;
2. if the weight ``w`` decided at ``t - 1`` differs from the weight in force, trade ``d`` of
   notional so that afterwards the position is exactly ``w`` x equity net of this trade's costs:
   ``d = (w E_o - q open) / (1 + w c sign(d))`` with cost rate ``c = fee + slippage``; the
   fee and the slippage are each paid on ``|d|`` (slippage: ``slippage_bps`` plus
   ``slippage_range_frac`` x (high - low) / close of the signal bar ``t - 1``, known when the
   order is sent);
3. funding: ``funding_rate[t] x q x close[t]`` is paid at the close (a long pays a positive rate);
4. equity at the close ``E_c = cash + q * close[t]``. Equity that reaches 0 stays at 0 (ruin).

Sizing turns the target (``-1 .. 1``, any real) into a weight: ``fixed`` multiplies by
``fraction``; ``vol_target`` by ``min(max_leverage, target_vol / realized_vol[t])`` where the
realized vol (sample std of the last ``vol_lookback`` log returns, annualised) uses closes up to
``t`` only; while it is undefined the weight is 0. Weights are clipped to ``+-max_leverage``.
For the all-in long/flat case this is exactly vectorbt's ``from_signals(size=inf)`` at the open.

:mod:`compute.backtest.reference` is a plain-Python loop of the same rules; tests hold the two
equal. :mod:`compute.backtest.sweep` evaluates a whole parameter grid in one compiled kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from compute.backtest.metrics import (
    Metric,
    drawdown,
    return_metrics,
    returns_from_equity,
    trade_metrics,
)
from compute.core import inputs
from compute.core.errors import InputDataError, SpecError
from compute.core.jaxconf import F64, jax, jnp, lax, require_x64
from compute.core.labels import TrendRegime, VolRegime

BPS = 1e-4
SIZINGS = ("fixed", "vol_target")
MAX_COST_BPS = 1_000.0  # 10 % per side: anything above is a typo, not a market
MAX_LEVERAGE = 10.0
MIN_REGIME_BARS = 30  # a per-regime Sharpe from fewer returns is noise (SE ~ 1 / sqrt(bars))
MIN_REGIME_TRADES = 5  # a hit rate / average trade from fewer trades is anecdote
SECONDS_PER_YEAR = 365 * 86_400


def periods_per_year(interval_seconds: float) -> float:
    """Bars in a 365-day year for a bar interval (daily 365, hourly 8,760, 1-minute 525,600)."""
    if not interval_seconds > 0:
        raise SpecError(f"interval_seconds must be > 0, got {interval_seconds!r}")
    return SECONDS_PER_YEAR / float(interval_seconds)


@dataclass(frozen=True)
class BacktestConfig:
    """Costs, sizing and annualisation of one backtest (validated on construction).

    fee_bps: fee per side, basis points of traded notional (>= 0).
    slippage_bps: fixed slippage per side, basis points of traded notional (>= 0).
    slippage_range_frac: extra slippage as a fraction of the signal bar's (high - low) / close.
    sizing: ``"fixed"`` (weight = target x fraction) or ``"vol_target"``.
    fraction: fixed-sizing weight per unit of target (0 < fraction <= max_leverage).
    target_vol: annualised volatility the ``vol_target`` sizing aims at (> 0).
    vol_lookback: bars of log returns in the realized-vol estimate (>= 2).
    max_leverage: cap on |weight| (gross exposure / equity), 0 < cap <= 10.
    periods_per_year: bars per 365-day year (see :func:`periods_per_year`).
    initial_capital: starting equity (> 0); metrics are scale-free, pnl is in these units.
    risk_free_rate: annual rate subtracted per bar (``/ periods_per_year``) in Sharpe/Sortino.
    """

    fee_bps: float = 0.0
    slippage_bps: float = 0.0
    slippage_range_frac: float = 0.0
    sizing: str = "fixed"
    fraction: float = 1.0
    target_vol: float = 0.5
    vol_lookback: int = 30
    max_leverage: float = 1.0
    periods_per_year: float = 365.0
    initial_capital: float = 1.0
    risk_free_rate: float = 0.0

    def __post_init__(self) -> None:
        def bounded(name: str, low: float, high: float, *, open_low: bool = False) -> None:
            value = getattr(self, name)
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            ok = ok and np.isfinite(value) and (value > low if open_low else value >= low)
            if not ok or value > high:
                side = "(" if open_low else "["
                raise SpecError(f"{name} must be in {side}{low:g}, {high:g}], got {value!r}")

        bounded("fee_bps", 0.0, MAX_COST_BPS)
        bounded("slippage_bps", 0.0, MAX_COST_BPS)
        bounded("slippage_range_frac", 0.0, 1.0)
        if self.sizing not in SIZINGS:
            raise SpecError(f"sizing must be one of {SIZINGS}, got {self.sizing!r}")
        bounded("max_leverage", 0.0, MAX_LEVERAGE, open_low=True)
        bounded("fraction", 0.0, float(self.max_leverage), open_low=True)
        bounded("target_vol", 0.0, 100.0, open_low=True)
        if isinstance(self.vol_lookback, bool) or not isinstance(self.vol_lookback, int):
            raise SpecError(f"vol_lookback must be an integer, got {self.vol_lookback!r}")
        if not 2 <= self.vol_lookback <= 100_000:
            raise SpecError(f"vol_lookback must be in [2, 100000], got {self.vol_lookback}")
        bounded("periods_per_year", 0.0, 1e8, open_low=True)
        bounded("initial_capital", 0.0, 1e15, open_low=True)
        bounded("risk_free_rate", -1.0, 1.0)


@dataclass
class BacktestResult:
    """What one backtest produced.

    metrics: scalars (``None`` where undefined), keys listed in ``docs/backtesting.md``.
    equity: ``ts`` (unix s), ``equity`` (at each close), ``drawdown`` (<= 0), ``position``
        (the weight in force during the bar, 0 when flat), ``exposure`` (position value /
        equity at the close), ``returns`` (per-bar simple return, 0 on bar 0).
    trades: one dict per trade (a run of bars with one nonzero sign), see :func:`_trades`.
    regime_stats: one dict per (kind, regime): bars, pnl, return, Sharpe, hit rate, trades,
        ``sufficient``; each kind sums to the totals.
    """

    metrics: dict[str, Metric]
    equity: dict[str, np.ndarray]
    trades: list[dict[str, Any]]
    regime_stats: list[dict[str, Any]]
    bars: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


# --- the kernel -----------------------------------------------------------------------------


def _step(carry: tuple, x: tuple) -> tuple[tuple, tuple]:
    cash, q, w_prev = carry
    o, c, w, slip, fund_rate, fee = x
    e_open = cash + q * o
    n_old = q * o
    diff = w * e_open - n_old
    rate = fee + slip
    trade = (w != w_prev) & (e_open > 0.0)
    d = jnp.where(trade, diff / (1.0 + w * rate * jnp.sign(diff)), 0.0)
    q_new = jnp.where(trade, (n_old + d) / o, q)
    fee_paid = fee * jnp.abs(d)
    slip_paid = slip * jnp.abs(d)
    cash = cash - d - fee_paid - slip_paid
    funding = fund_rate * q_new * c
    cash = cash - funding
    e_close = cash + q_new * c
    ruined = e_close <= 0.0
    cash = jnp.where(ruined, 0.0, cash)
    q_new = jnp.where(ruined, 0.0, q_new)
    e_close = jnp.where(ruined, 0.0, e_close)
    return (cash, q_new, w), (e_open, e_close, q_new, d, fee_paid, slip_paid, funding)


@jax.jit
def simulate(
    open_: jax.Array,
    close: jax.Array,
    weight_exec: jax.Array,
    slip: jax.Array,
    funding: jax.Array,
    fee: jax.Array,
    capital: jax.Array,
) -> tuple[jax.Array, ...]:
    """Per-bar accounting for one series (all ``(T,)``; ``weight_exec[t]`` executes at
    ``open[t]``). Returns ``(equity_open, equity_close, units, traded_notional, fees,
    slippage, funding)``, each ``(T,)``."""
    init = (jnp.asarray(capital, F64), jnp.zeros((), F64), jnp.zeros((), F64))
    fee_t = jnp.broadcast_to(jnp.asarray(fee, F64), open_.shape)
    _, out = lax.scan(_step, init, (open_, close, weight_exec, slip, funding, fee_t))
    return out


def _simulate_bucketed(
    o: np.ndarray,
    c: np.ndarray,
    w_exec: np.ndarray,
    slip: np.ndarray,
    fund: np.ndarray,
    fee: float,
    config: BacktestConfig,
) -> list[np.ndarray]:
    """:func:`simulate` on arrays padded to a bucketed length (the last price repeated, no
    position, no cost), so series of nearby lengths share one compiled scan; the scan is
    sequential, so the first ``T`` outputs are those of the unpadded run, bit for bit."""
    n = o.shape[0]
    m = inputs.bucket(n)

    def pad(a: np.ndarray, value: float | None = None) -> np.ndarray:
        fill = a[-1] if value is None else value
        return np.concatenate([a, np.full(m - n, fill, dtype=np.float64)])

    out = simulate(
        pad(o), pad(c), pad(w_exec, 0.0), pad(slip, 0.0), pad(fund, 0.0), fee,
        config.initial_capital,
    )  # fmt: skip
    return [np.asarray(a)[:n] for a in out]


# --- inputs -----------------------------------------------------------------------------------


def _weights(target: np.ndarray, close: np.ndarray, config: BacktestConfig) -> np.ndarray:
    """The weight decided at each close (sizing applied, clipped to +-max_leverage)."""
    if config.sizing == "fixed":
        w = target * config.fraction
    else:
        from compute.indicators.regimes import realized_vol

        rv = realized_vol(close, n=config.vol_lookback, periods_per_year=config.periods_per_year)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(rv > 0.0, config.target_vol / rv, config.max_leverage)
        scale = np.where(np.isnan(rv), 0.0, np.minimum(scale, config.max_leverage))
        w = target * scale
    return np.clip(w, -config.max_leverage, config.max_leverage) + 0.0  # no -0.0


def _series(
    ts: npt.ArrayLike,
    open_: npt.ArrayLike,
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    close: npt.ArrayLike,
    target_position: npt.ArrayLike,
    funding_rate: npt.ArrayLike | None,
) -> tuple[np.ndarray, ...]:
    o, h, lo, c = inputs.ohlc(open=open_, high=high, low=low, close=close)
    if o.ndim != 1:
        raise InputDataError(f"prices must be 1-D (one series), got shape {o.shape}")
    length = o.shape[0]
    secs = inputs.unix_seconds(ts, length)
    target = inputs.series("target_position", target_position, minimum=None, strict=False)
    if target.shape != (length,):
        raise InputDataError(f"target_position: expected shape ({length},), got {target.shape}")
    if funding_rate is None:
        fund = np.zeros(length)
    else:
        fund = inputs.series("funding_rate", funding_rate, minimum=None, strict=False)
        if fund.shape != (length,):
            raise InputDataError(f"funding_rate: expected shape ({length},), got {fund.shape}")
        if (np.abs(fund) > 0.1).any():
            bad = int(np.argmax(np.abs(fund) > 0.1))
            raise InputDataError(
                f"funding_rate: |rate| > 10% per bar at {bad} ({fund[bad]}); rates are "
                "fractions (0.0001 = 1 bp), not percent"
            )
    return secs, o, h, lo, c, target, fund


def _slippage(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, cfg: BacktestConfig
) -> np.ndarray:
    """Slippage rate of an order executing at open[t]: from the signal bar ``t - 1``."""
    rate = np.full(close.shape[0], cfg.slippage_bps * BPS)
    if cfg.slippage_range_frac > 0.0 and close.shape[0] > 1:
        rate[1:] += cfg.slippage_range_frac * (high[:-1] - low[:-1]) / close[:-1]
    return rate


# --- public entry point ---------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """One backtest's checked inputs, ready for the accounting scan (see :func:`prepare`)."""

    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    weight: np.ndarray  # executed at open[t]
    slip: np.ndarray
    funding: np.ndarray
    config: BacktestConfig

    @property
    def length(self) -> int:
        return int(self.open.shape[0])


def prepare(
    ts: npt.ArrayLike,
    open: npt.ArrayLike,
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    close: npt.ArrayLike,
    target_position: npt.ArrayLike,
    config: BacktestConfig,
    *,
    funding_rate: npt.ArrayLike | None = None,
    hold_from_start: bool = False,
) -> Prepared:
    """Check the inputs and turn target positions into executed weights and costs."""
    require_x64()
    if not isinstance(config, BacktestConfig):
        raise SpecError(f"config must be a BacktestConfig, got {type(config).__name__}")
    secs, o, h, lo, c, target, fund = _series(
        ts, open, high, low, close, target_position, funding_rate
    )
    length = o.shape[0]
    if length < 2:
        raise InputDataError(f"need at least 2 candles to backtest, got {length}")
    w_decided = _weights(target, c, config)
    w_exec = np.concatenate([[0.0], w_decided[:-1]])  # decided at t - 1, executed at open[t]
    if hold_from_start:
        o = o.copy()
        o[0] = c[0]  # the test starts at the first close: the entry fills there
        w_exec[0] = w_decided[0]
    slip = _slippage(h, lo, c, config)
    worst = float(np.abs(w_exec).max() * (config.fee_bps * BPS + slip.max()))
    if worst >= 0.5:
        raise InputDataError(
            f"costs too large: |weight| x (fee + slippage) reaches {worst:.3g} per trade (must "
            "stay below 0.5); lower slippage_range_frac, the fees or the leverage"
        )
    return Prepared(secs, o, h, lo, c, w_exec, slip, fund, config)


def finish(
    prep: Prepared, out: Sequence[np.ndarray], regimes: dict[str, npt.ArrayLike] | None = None
) -> BacktestResult:
    """The result of a backtest from its accounting scan's outputs."""
    e_open, e_close, units, traded, fees, slips, funding = out
    bars = {
        "ts": prep.ts,
        "open": prep.open,
        "high": prep.high,
        "low": prep.low,
        "close": prep.close,
        "weight": prep.weight,
        "equity_open": e_open,
        "equity": e_close,
        "units": units,
        "traded": traded,
        "fees": fees,
        "slippage": slips,
        "funding": funding,
    }
    labels = _regimes(regimes, prep.high, prep.low, prep.close)
    trades = _trades(bars, labels)
    return BacktestResult(
        metrics=_metrics(bars, trades, prep.config),
        equity=_equity(bars),
        trades=trades,
        regime_stats=_regime_stats(bars, labels, trades, prep.config.periods_per_year),
        bars=bars,
    )


_simulate_rows = jax.jit(jax.vmap(simulate, in_axes=(0, 0, 0, 0, 0, 0, None)))


def simulate_many(preps: Sequence[Prepared]) -> list[list[np.ndarray]]:
    """The accounting scans of many backtests in one compiled call (rows padded to a common
    bucketed length with no position and no cost; each row's first ``T`` outputs are those of
    its own run, bit for bit: the scan is sequential and the rows are independent)."""
    if not preps:
        return []
    n = max(p.length for p in preps)
    m = inputs.bucket(n)
    rows = -(-len(preps) // 8) * 8  # few distinct batch shapes: round the rows up to 8

    def stack(attr: str, fill_last: bool) -> np.ndarray:
        out = np.zeros((rows, m), np.float64)
        for k, p in enumerate(preps):
            a = getattr(p, attr)
            out[k, : p.length] = a
            out[k, p.length :] = a[-1] if fill_last else 0.0
        if fill_last:
            out[len(preps) :] = out[0]
        return out

    fee = np.zeros(rows)
    fee[: len(preps)] = [p.config.fee_bps * BPS for p in preps]
    capital = preps[0].config.initial_capital
    if any(p.config.initial_capital != capital for p in preps):
        raise SpecError("simulate_many: every backtest of a batch needs the same capital")
    out = _simulate_rows(
        stack("open", True), stack("close", True), stack("weight", False),
        stack("slip", False), stack("funding", False), fee, capital,
    )  # fmt: skip
    host = [np.asarray(a) for a in out]
    return [[a[k, : p.length] for a in host] for k, p in enumerate(preps)]


def run_backtest(
    ts: npt.ArrayLike,
    open: npt.ArrayLike,
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    close: npt.ArrayLike,
    target_position: npt.ArrayLike,
    config: BacktestConfig,
    *,
    funding_rate: npt.ArrayLike | None = None,
    regimes: dict[str, npt.ArrayLike] | None = None,
    hold_from_start: bool = False,
) -> BacktestResult:
    """Backtest one series of candles against target positions (decided at each close).

    ``target_position[t]`` in ``[-1, 1]`` (any real is scaled by the sizing) executes at
    ``open[t + 1]``. ``funding_rate[t]`` (a fraction per bar, e.g. ``0.0001`` on the bars
    where a perpetual's funding settles, 0 elsewhere) is charged on the position held at
    ``close[t]``. ``regimes`` maps ``"vol"`` / ``"trend"`` to ``int8`` labels per bar (codes
    of :mod:`compute.core.labels`, -1 missing); when omitted they are computed with the default
    :func:`compute.indicators.regimes.vol_regime` and :func:`compute.indicators.regimes.trend`.
    Raises
    :class:`~compute.core.errors.InputDataError` / :class:`~compute.core.errors.SpecError` on bad
    input.

    ``hold_from_start`` is for positions known before the data (buy-and-hold, a given
    position series), never for a signal computed from bar 0: the first target is entered at
    ``close[0]``, the start of the test (bar 0 counts as a bar that opens at its close, so it
    earns nothing), and bar ``t >= 1`` then earns ``close[t] / close[t - 1]`` exactly, the
    textbook close-to-close series.
    """
    prep = prepare(
        ts, open, high, low, close, target_position, config,
        funding_rate=funding_rate, hold_from_start=hold_from_start,
    )  # fmt: skip
    out = _simulate_bucketed(
        prep.open, prep.close, prep.weight, prep.slip, prep.funding,
        config.fee_bps * BPS, config,
    )  # fmt: skip
    return finish(prep, out, regimes)


# --- outputs ----------------------------------------------------------------------------------


def _equity(bars: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    eq = bars["equity"]
    held = bars["units"] != 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        exposure = np.where(eq > 0.0, bars["units"] * bars["close"] / eq, 0.0)
    return {
        "ts": bars["ts"],
        "equity": eq,
        "drawdown": drawdown(eq),
        "position": np.where(held, bars["weight"], 0.0) + 0.0,
        "exposure": exposure,
        "returns": np.concatenate([[0.0], returns_from_equity(eq)]),
    }


def _trade_ids(units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per bar: the id of the trade holding during it (-1 flat) and the trades' first bars."""
    side = np.sign(units)
    prev = np.concatenate([[0.0], side[:-1]])
    starts = np.flatnonzero((side != 0.0) & (side != prev))
    ids = np.cumsum((side != 0.0) & (side != prev)) - 1
    return np.where(side != 0.0, ids, -1), starts


def _trades(bars: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Each run of bars with one nonzero sign is a trade; every pnl component is booked to
    the trade whose units caused it (the move from open to close and the funding of bar t to
    the units held in t; the gap close[t-1] -> open[t] to the units held in t-1; trading costs
    to the trade being opened, resized or closed, a flip's cost split by notional), so the
    pnls sum exactly to the equity's change."""
    units, o, c = bars["units"], bars["open"], bars["close"]
    ids, starts = _trade_ids(units)
    count = starts.shape[0]
    if count == 0:
        return []
    length = units.shape[0]
    prev_units = np.concatenate([[0.0], units[:-1]])
    prev_ids = np.concatenate([[-1], ids[:-1]])
    prev_close = np.concatenate([[c[0]], c[:-1]])
    rate = np.divide(
        bars["fees"] + bars["slippage"],
        np.abs(bars["traded"]),
        out=np.zeros(length),
        where=bars["traded"] != 0.0,
    )
    fee_rate = np.divide(
        bars["fees"], np.abs(bars["traded"]), out=np.zeros(length), where=bars["traded"] != 0.0
    )
    flip = np.sign(units) != np.sign(prev_units)
    closing = np.where(flip & (prev_ids >= 0), np.abs(prev_units * o), 0.0)
    opening = np.where(flip, np.abs(units * o), np.abs(bars["traded"]))
    opening = np.where(ids >= 0, opening, 0.0)

    def book(values: np.ndarray, owner: np.ndarray) -> np.ndarray:
        keep = owner >= 0
        return np.bincount(owner[keep], weights=values[keep], minlength=count)

    move = book(units * (c - o), ids) + book(prev_units * (o - prev_close), prev_ids)
    costs = book(rate * opening, ids) + book(rate * closing, prev_ids)
    fees = book(fee_rate * opening, ids) + book(fee_rate * closing, prev_ids)
    funding = book(bars["funding"], ids)
    pnl = move - costs - funding
    held = np.flatnonzero(ids >= 0)  # ids rise by one per trade along the held bars
    ends = held[np.searchsorted(ids[held], np.arange(count), side="right") - 1]
    out: list[dict[str, Any]] = []
    ts = bars["ts"]
    for k in range(count):
        a, b = int(starts[k]), int(ends[k])
        is_open = b == length - 1
        exit_at = b if is_open else b + 1
        side = 1 if units[a] > 0 else -1
        entry_equity = float(bars["equity_open"][a])
        out.append(
            {
                "side": "long" if side > 0 else "short",
                "entry_ts": int(ts[a]),
                "entry_price": float(o[a]),
                "exit_ts": int(ts[exit_at]),
                "exit_price": float(c[b] if is_open else o[b + 1]),
                "open": is_open,
                "size": float(abs(units[a])),
                "weight": float(bars["weight"][a]),
                "bars_held": b - a + 1,
                "pnl": float(pnl[k]),
                "return": float(pnl[k] / entry_equity) if entry_equity > 0 else None,
                "costs": float(costs[k]),
                "fees": float(fees[k]),
                "funding": float(funding[k]),
                "vol_regime": _name(VolRegime, labels["vol"][a - 1]) if a > 0 else "MISSING",
                "trend_regime": _name(TrendRegime, labels["trend"][a - 1]) if a > 0 else "MISSING",
            }
        )
    return out


def _name(enum: type[VolRegime] | type[TrendRegime], code: Any) -> str:
    return enum(int(code)).name


def _metrics(
    bars: dict[str, np.ndarray], trades: list[dict[str, Any]], config: BacktestConfig
) -> dict[str, Metric]:
    eq = bars["equity"]
    r = returns_from_equity(eq)
    out: dict[str, Metric] = {"bars": int(eq.shape[0])}
    out.update(return_metrics(r, config.periods_per_year, config.risk_free_rate))
    for key in ("max_drawdown_peak", "max_drawdown_trough", "max_drawdown_recovery"):
        idx = out.pop(key)
        out[f"{key}_ts"] = int(bars["ts"][int(idx)]) if idx is not None else None
    units = bars["units"][1:]
    e_open = bars["equity_open"]
    with np.errstate(divide="ignore", invalid="ignore"):
        turn = np.where(e_open > 0.0, np.abs(bars["traded"]) / e_open, 0.0)
    n = max(r.shape[0], 1)
    out.update(
        exposure=float((units != 0.0).mean()) if units.size else 0.0,
        turnover=float(turn.sum()),
        turnover_annual=float(turn.sum()) * config.periods_per_year / n,
        **trade_metrics(
            [t["pnl"] for t in trades],
            [t["return"] or 0.0 for t in trades],
            [not t["open"] for t in trades],
        ),
        fees_paid=float(bars["fees"].sum()),
        slippage_paid=float(bars["slippage"].sum()),
        funding_paid=float(bars["funding"].sum()),
        initial_capital=config.initial_capital,
        final_equity=float(eq[-1]),
        ruined=bool((eq <= 0.0).any()),
        periods_per_year=config.periods_per_year,
        start_ts=int(bars["ts"][0]),
        end_ts=int(bars["ts"][-1]),
    )
    return out


def _regimes(
    regimes: dict[str, npt.ArrayLike] | None, high: np.ndarray, low: np.ndarray, close: np.ndarray
) -> dict[str, np.ndarray]:
    length = close.shape[0]
    given = dict(regimes or {})
    unknown = set(given) - {"vol", "trend"}
    if unknown:
        raise InputDataError(f"regimes: unknown kinds {sorted(unknown)}; use 'vol' and 'trend'")
    out: dict[str, np.ndarray] = {}
    for kind, enum in (("vol", VolRegime), ("trend", TrendRegime)):
        if kind in given:
            arr = np.asarray(given[kind])
            if arr.shape != (length,):
                raise InputDataError(
                    f"regimes[{kind!r}]: expected shape ({length},), got {arr.shape}"
                )
            valid = np.isin(arr, [int(m) for m in enum])
            if not valid.all():
                bad = int(np.argmin(valid))
                raise InputDataError(
                    f"regimes[{kind!r}]: code {arr[bad]} at {bad} is not one of "
                    f"{[f'{m.value}={m.name}' for m in enum]}"
                )
            out[kind] = arr.astype(np.int8)
    if "vol" not in out or "trend" not in out:
        from compute.indicators import regimes as reg

        if "vol" not in out:
            out["vol"] = reg.vol_regime(close)
        if "trend" not in out:
            out["trend"] = reg.trend(high, low, close)[1]
    return out


def _regime_stats(
    bars: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    trades: list[dict[str, Any]],
    ppy: float,
) -> list[dict[str, Any]]:
    """Per regime kind and code: the returns of bars 1..T-1 grouped by the label of the bar
    *before* (the regime known when the position held in the bar was decided) and the trades
    by their regime at entry. Rows of one kind sum to the totals: bars, in-market bars, pnl,
    log return and trades add up; the compounded returns multiply up to the total return."""
    eq = bars["equity"]
    r = returns_from_equity(eq)
    pnl = np.diff(eq)
    held = bars["units"][1:] != 0.0
    with np.errstate(divide="ignore"):
        logr = np.log1p(r)
    out: list[dict[str, Any]] = []
    from compute.backtest.metrics import annualised_sharpe

    for kind, enum in (("vol", VolRegime), ("trend", TrendRegime)):
        lab = labels[kind][:-1]
        trade_regimes = [t[f"{kind}_regime"] for t in trades]
        for member in enum:
            sel = lab == int(member)
            n_bars = int(sel.sum())
            n_trades = sum(1 for name in trade_regimes if name == member.name)
            active = sel & held
            n_active = int(active.sum())
            log_ret = float(logr[sel].sum())
            out.append(
                {
                    "kind": kind,
                    "regime": member.name,
                    "code": int(member),
                    "bars": n_bars,
                    "bars_in_market": n_active,
                    "trades": n_trades,
                    "pnl": float(pnl[sel].sum()),
                    "log_return": log_ret,
                    "return": float(np.expm1(log_ret)),
                    "sharpe": annualised_sharpe(r[sel], ppy),
                    "hit_rate": float((r[active] > 0.0).mean()) if n_active else None,
                    "sufficient": n_bars >= MIN_REGIME_BARS and n_trades >= MIN_REGIME_TRADES,
                }
            )
    return out
