"""The backtest service: validate and cap a request, read its data, run the engine, record it.

Order matters: everything that can be checked without work is checked first (strategy and
parameters, interval, coin, times), then the candles in the window are *counted* (one indexed
query) and the caps and the warm-up are checked against the count; only then are candles and
funding read and the engine run. A run is recorded in the registry (``storage.runs``) as
``running`` before the engine starts and updated to ``succeeded`` or ``failed`` after, so a
crash leaves a trace.

``compute`` (JAX) is imported on first use: the market API and the CLI never pay for it.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from compute.core.errors import ComputeError
from serve_app.api.backtest_models import BacktestRunRequest, CostsAndSizing, _DataAndCosts
from serve_app.api.errors import ApiError
from serve_app.api.market import check_interval, parse_range, resolve_coin
from serve_app.api.timefmt import iso
from serve_app.runs import canonical_request, code_version, request_hash
from serve_app.settings import Settings
from storage.derivatives import FundingRepository
from storage.engine import transaction
from storage.fingerprint import series_fingerprint
from storage.intervals import interval_seconds, periods_per_year
from storage.models import Candle
from storage.runs import RunRepository

MAX_BACKTEST_BARS = 1_000_000  # candles one request may use (warm-up included)
MAX_GRID = 1_000  # parameter sets a walk-forward searches per fold
MAX_WORK = 2_000_000_000  # parameter sets x bars of one walk-forward (train + test, all folds)
MIN_TRADE_BARS = 2  # a signal at bar t executes at t+1: one bar after the warm-up is not enough
STORE_EQUITY_POINTS = 100_000  # equity points kept in the registry (evenly thinned beyond)
EQUITY_COLUMNS = ("ts", "equity", "drawdown", "position", "exposure")


# ------------------------------------------------------------------------------ strategies
def strategy_error(exc: Exception, strategy: str) -> ApiError:
    """A compute validation error as a 422 that lists the valid strategies and parameters."""
    from compute.backtest.strategies import STRATEGIES

    valid = [s.describe() for s in STRATEGIES.values()]
    unknown = strategy not in STRATEGIES
    return ApiError(
        422,
        "unknown_strategy" if unknown else "invalid_parameter",
        str(exc),
        parameter="strategy" if unknown else "params",
        valid=valid,
    )


def validate_strategy(strategy: str, params: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The parameters with defaults filled in, and the candles one traded bar needs (warm-up
    + 2: a signal at bar t executes at t + 1's open); 422 naming what is valid otherwise."""
    from compute.backtest import strategies

    try:
        full = strategies.validate_strategy(strategy, dict(params))
        return full, int(strategies.required_bars(strategy, full))
    except ComputeError as exc:
        raise strategy_error(exc, strategy) from None


# ------------------------------------------------------------------------------------ data
@dataclass(frozen=True)
class SeriesData:
    """The candles (and per-bar funding) a run uses, ascending by ts."""

    coin: str
    interval: str
    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    funding: np.ndarray | None  # rate settled during each bar, or None when not applied
    funding_rows: int
    fingerprint: str
    missing_bars: int

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def step(self) -> int:
        return interval_seconds(self.interval)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays a Ray task needs (``ray.put`` once)."""
        out = {k: getattr(self, k) for k in ("ts", "open", "high", "low", "close")}
        if self.funding is not None:
            out["funding"] = self.funding
        return out

    def used(self) -> dict[str, Any]:
        first, last = int(self.ts[0]), int(self.ts[-1])
        return {
            "candles": len(self),
            "first_ts": iso(first),
            "first_ts_unix": first,
            "last_ts": iso(last),
            "last_ts_unix": last,
            "missing_bars": self.missing_bars,
            "fingerprint": self.fingerprint,
            "funding_rows": self.funding_rows,
        }


@dataclass(frozen=True)
class Window:
    """A request's series and time window, checked."""

    coin: str
    interval: str
    start: int | None
    end: int | None


def check_window(session: Session, settings: Settings, req: _DataAndCosts) -> Window:
    """Interval, coin and times of a request: 422 (404 for an unknown coin) when wrong."""
    interval = check_interval(req.interval)
    start, end = parse_range(
        None if req.start is None else str(req.start), None if req.end is None else str(req.end)
    )
    return Window(resolve_coin(session, settings, req.coin), interval, start, end)


def _where(w: Window) -> list[Any]:
    clauses = [Candle.coin == w.coin, Candle.interval == w.interval]
    if w.start is not None:
        clauses.append(Candle.ts >= w.start)
    if w.end is not None:
        clauses.append(Candle.ts <= w.end)
    return clauses


def count_candles(session: Session, w: Window) -> int:
    return int(session.scalar(select(func.count()).select_from(Candle).where(*_where(w))) or 0)


def insufficient(session: Session, w: Window, required: int, received: int, what: str) -> ApiError:
    """422 ``insufficient_data`` with counts, the look-back as time, the latest candle and a
    start that would hold ``required`` candles (if the series has no gaps there)."""
    step = interval_seconds(w.interval)
    latest_q = select(func.max(Candle.ts)).where(
        Candle.coin == w.coin,
        Candle.interval == w.interval,
        *([Candle.ts <= w.end] if w.end is not None else []),
    )
    latest = session.scalar(latest_q)
    latest_i = None if latest is None else int(latest)
    first = session.scalar(
        select(func.min(Candle.ts)).where(Candle.coin == w.coin, Candle.interval == w.interval)
    )
    suggested = None if latest_i is None else latest_i - (required - 1) * step
    lookback_s = required * step
    if latest_i is None:
        message = (
            f"{what} needs {required} {w.interval} candles but none are stored for {w.coin}"
            f"{'' if w.end is None else ' up to ' + iso(w.end)}; import or ingest them first "
            f"(squall import / squall backfill)"
        )
    else:
        assert suggested is not None
        message = (
            f"{what} needs {required} {w.interval} candles ({lookback_s} s of history) but "
            f"the requested window holds {received}; the latest stored candle is "
            f"{iso(latest_i)}: ask for start <= {iso(suggested)} (unix {suggested})"
        )
        if first is not None and suggested < int(first):
            message += (
                f", which is before the first stored candle ({iso(int(first))}): backfill "
                "earlier history or shorten the request"
            )
    return ApiError(
        422,
        "insufficient_data",
        message,
        parameter="start",
        required_candles=required,
        received_candles=received,
        required_lookback_s=lookback_s,
        latest_ts=None if latest_i is None else iso(latest_i),
        latest_ts_unix=latest_i,
        suggested_start=None if suggested is None else iso(max(suggested, 0)),
        suggested_start_unix=None if suggested is None else max(suggested, 0),
    )


def too_many_bars(w: Window, count: int, cap: int = MAX_BACKTEST_BARS) -> ApiError:
    return ApiError(
        422,
        "too_many_bars",
        f"the window holds {count} {w.interval} candles of {w.coin}; a request may use at most "
        f"{cap}: narrow start/end, use a longer interval, or run a sweep job (squall sweep)",
        parameter="start",
        cap=cap,
    )


def checked_count(session: Session, w: Window, required: int, what: str) -> int:
    """The candles in the window, after the cap and the warm-up are checked against it."""
    n = count_candles(session, w)
    if n > MAX_BACKTEST_BARS:
        raise too_many_bars(w, n)
    if n < required:
        raise insufficient(session, w, required, n, what)
    return n


def funding_per_bar(
    bar_ts: np.ndarray, step: int, settle_ts: np.ndarray, rates: np.ndarray
) -> np.ndarray:
    """The funding rate settled during each bar: a settlement at time T is paid by the
    position held just before T, i.e. by the bar with ``open < T <= open + step``."""
    out = np.zeros(len(bar_ts), dtype=np.float64)
    if not len(settle_ts):
        return out
    idx = np.searchsorted(bar_ts, settle_ts, side="left") - 1
    ok = (idx >= 0) & (settle_ts <= bar_ts[np.clip(idx, 0, None)] + step)
    np.add.at(out, idx[ok], rates[ok])
    return out


def _fingerprint(frame: pd.DataFrame, funding: pd.DataFrame | None) -> str:
    fp = series_fingerprint(frame)
    if funding is None or funding.empty:
        return fp
    raw = funding["ts"].to_numpy(np.int64).tobytes()
    raw += funding["funding_rate"].to_numpy(np.float64).tobytes()
    return f"{fp}-f{hashlib.sha256(raw).hexdigest()[:16]}"


def load_series(session: Session, w: Window, *, with_funding: bool) -> SeriesData:
    """Candles of the window (and the funding settled during them) as arrays."""
    from storage.candle_reads import read_candle_columns

    c = read_candle_columns(
        session, w.coin, w.interval, start=w.start, end=w.end, limit=MAX_BACKTEST_BARS + 1
    )
    step = interval_seconds(w.interval)
    frame = pd.DataFrame(
        {
            "ts": c.ts,
            "open": c.open,
            "high": c.high,
            "low": c.low,
            "close": c.close,
            "volume_base": c.volume_base,
        }
    )
    funding = None
    per_bar = None
    if with_funding and len(c):
        funding = FundingRepository(session).frame(
            w.coin, start=int(c.ts[0]) + 1, end=int(c.ts[-1]) + step
        )
        per_bar = funding_per_bar(
            c.ts,
            step,
            funding["ts"].to_numpy(np.int64),
            funding["funding_rate"].to_numpy(np.float64),
        )
    missing = 0 if not len(c) else (int(c.ts[-1]) - int(c.ts[0])) // step + 1 - len(c)
    return SeriesData(
        coin=w.coin,
        interval=w.interval,
        ts=c.ts,
        open=c.open,
        high=c.high,
        low=c.low,
        close=c.close,
        volume=c.volume_base,
        funding=per_bar,
        funding_rows=0 if funding is None else len(funding),
        fingerprint=_fingerprint(frame, funding),
        missing_bars=missing,
    )


# ---------------------------------------------------------------------------------- engine
def engine_config(req: CostsAndSizing, interval: str) -> Any:
    """The engine's ``BacktestConfig`` for a request; 422 when the combination is invalid
    (e.g. a fixed fraction above max_leverage)."""
    from compute.backtest.engine import BacktestConfig

    try:
        return BacktestConfig(
            fee_bps=req.fee_bps,
            slippage_bps=req.slippage_bps,
            slippage_range_frac=req.slippage_range_frac,
            sizing=req.sizing,
            fraction=req.fraction,
            target_vol=req.target_vol,
            vol_lookback=req.vol_lookback,
            max_leverage=req.max_leverage,
            periods_per_year=periods_per_year(interval),
        )
    except ComputeError as exc:
        raise ApiError(422, "invalid_costs_or_sizing", f"{exc}; fix that body field") from None


def run_engine(data: SeriesData, strategy: str, params: dict[str, Any], config: Any) -> Any:
    """Positions of the strategy, then the engine; a compute input error is a 422."""
    from compute.backtest import strategies
    from compute.backtest.engine import run_backtest

    try:
        target = strategies.positions(strategy, params, data.open, data.high, data.low, data.close)
        return run_backtest(
            data.ts,
            data.open,
            data.high,
            data.low,
            data.close,
            target,
            config,
            funding_rate=data.funding,
            hold_from_start=strategy in strategies.HELD_FROM_START,
        )
    except ComputeError as exc:
        raise ApiError(422, "data_integrity", f"the stored data cannot be used: {exc}") from None


# -------------------------------------------------------------------------------- the runs
@dataclass
class Recorded:
    """A finished run as stored (and as the response is built from)."""

    run_id: str
    created_at: int
    duration_s: float
    used: dict[str, Any]
    metrics: dict[str, Any]
    equity: dict[str, Any]
    trades: list[dict[str, Any]]
    regime_stats: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)


def thin_indices(n: int, points: int) -> tuple[np.ndarray, int]:
    """Evenly spaced indices into ``n`` points, at most ``points`` of them, the last kept."""
    stride = max(1, math.ceil(n / max(points - 1, 1))) if n > points else 1
    idx = np.arange(0, n, stride)
    if n and idx[-1] != n - 1:
        idx = np.append(idx, n - 1)
    return idx, stride


def stored_equity(equity: dict[str, Any]) -> dict[str, Any]:
    """The equity columns the registry keeps, thinned to ``STORE_EQUITY_POINTS``."""
    n = len(equity["ts"])
    idx, stride = thin_indices(n, STORE_EQUITY_POINTS)
    out: dict[str, Any] = {
        k: _plain(np.asarray(equity[k])[idx]) for k in EQUITY_COLUMNS if k in equity
    }
    out["stride"] = stride
    out["total_points"] = n
    return out


def _plain(value: Any) -> Any:
    """NumPy scalars/arrays as plain JSON values (NaN -> None)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def start_run(
    sessions: sessionmaker[Session],
    kind: str,
    req: Any,
    *,
    coin: str | None,
    interval: str | None,
    strategy: str | None,
    seed: int | None,
    rerun_of: str | None = None,
) -> tuple[str, int]:
    """Record a ``running`` run; returns its id and creation time."""
    created = int(time.time())
    with transaction(sessions) as session:
        run_id = RunRepository(session).add(
            kind,
            canonical_request(req),
            request_hash=request_hash(req),
            code_version=code_version(),
            status="running",
            created_at=created,
            coin=coin,
            interval=interval,
            strategy=strategy,
            seed=seed,
            rerun_of=rerun_of,
        )
    return run_id, created


def fail_run(
    sessions: sessionmaker[Session], run_id: str, exc: BaseException, started: float
) -> None:
    with transaction(sessions) as session:
        RunRepository(session).update(
            run_id,
            status="failed",
            error=f"{type(exc).__name__}: {exc}"[:2000],
            duration_s=time.perf_counter() - started,
            finished_at=int(time.time()),
        )


def run_backtest_request(
    sessions: sessionmaker[Session],
    settings: Settings,
    req: BacktestRunRequest,
    *,
    rerun_of: str | None = None,
) -> Recorded:
    """Validate, cap, load, run and record one backtest."""
    params, required = validate_strategy(req.strategy, req.params)
    warmup = required - MIN_TRADE_BARS
    with sessions() as session:
        window = check_window(session, settings, req)
        checked_count(session, window, required, f"{req.strategy} (warm-up {warmup} bars)")
        data = load_series(session, window, with_funding=req.funding)
    config = engine_config(req, window.interval)
    run_id, created = start_run(
        sessions,
        "backtest",
        req,
        coin=window.coin,
        interval=window.interval,
        strategy=req.strategy,
        seed=req.seed,
        rerun_of=rerun_of,
    )
    started = time.perf_counter()
    try:
        result = run_engine(data, req.strategy, params, config)
    except BaseException as exc:
        fail_run(sessions, run_id, exc, started)
        raise
    duration = time.perf_counter() - started
    used = {
        "coin": window.coin,
        "interval": window.interval,
        "strategy": req.strategy,
        "params": params,
        "warmup_bars": warmup,
        "data": data.used(),
        "seed": req.seed,
        "code_version": code_version(),
        "request_hash": request_hash(req),
        "periods_per_year": periods_per_year(window.interval),
    }
    rec = Recorded(
        run_id=run_id,
        created_at=created,
        duration_s=duration,
        used=used,
        metrics=_plain(result.metrics),
        equity=stored_equity(result.equity),
        trades=_plain(list(result.trades)),
        regime_stats=_plain(list(result.regime_stats)),
    )
    with transaction(sessions) as session:
        RunRepository(session).update(
            run_id,
            status="succeeded",
            data_fingerprint=data.fingerprint,
            duration_s=duration,
            finished_at=int(time.time()),
            summary=rec.metrics,
            equity=rec.equity,
            trades=rec.trades,
            results={"used": used, "regime_stats": rec.regime_stats},
        )
    return rec
