"""An offline synthetic crypto market: deterministic candles, snapshots, funding and OI.

Why: ``make run`` and the tests need a market with the statistical texture of crypto (fat
tails, volatility clustering, regimes, intraday seasonality, correlated coins) without a
network, and it must be *reproducible*: the 1-minute bar of (seed, coin, ts) is the same
whatever range it was asked in, in whatever order, from whichever instance.

The model, for coin c on UTC day d (counted from ``origin``), hour k and minute j:

* market regime R_d in {calm, normal, turbulent} (daily Markov chain ``REGIME_TRANSITION``,
  vol multipliers ``REGIME_VOL``) and drift regime D_d in {bear, flat, bull}
  (``DRIFT_PER_YEAR``, stays with probability ``DRIFT_STAY``);
* daily log-vol m_d (market) + u_{c,d} (coin), each AR(1); an hourly log-vol a_{c,d,k},
  AR(1) over hours and carried across days; intraday seasonality s_k peaking ~15:00 UTC;
  weekends quieter. Hourly variance, Student-t via a chi-square mixture (w ~ chi2_nu / nu)::

      v = 60 σ_c² · REGIME_VOL[R_d]² · e^{2(m_d + u_{c,d})} · s_k² · e^{2a - 2σ_a²} · (ν-2)/(ν w)

* hourly Gaussian return g = √v (β_c ξ_mkt + √(1-β_c²) ξ_c) (coins correlate through
  ξ_mkt), plus Poisson jumps (market-wide, rate by regime, and idiosyncratic) of
  N(0, ``JUMP_SIGMAS``²) hourly sigmas, spread over ``JUMP_MINUTES`` minutes;
* log level L_{d+1} = L_d + 1440 μ_d + Σ_k (g_k + jumps_k), with per-minute drift
  μ_d = DRIFT[D_d] - κ (L_d - log base price): prices stay positive and near their base;
* minutes: a Gaussian bridge splits each g_k into 60 increments that sum to g_k and, given
  their variances, are exactly independent normals; the variances follow a normal mixture
  (a "busy" minute has ``MINUTE_MIX`` times the variance), so 1-minute returns are
  fat-tailed; the minute shocks load on a market shock too (β_c). Wicks are half-normal in
  the minute sigma; volume is lognormal noise times the minute sigma and |return|;
  volume_quote = volume × typical price; trade count = quote / ticket + 1.

Randomness is counter based: Philox keyed by (seed, coin) with the counter naming a block of
``BLOCK_DAYS`` days (coarse, hourly draws) or one day (fine, minute draws), so any day is
computed without generating earlier minutes. The slow-moving state (regimes, AR states, price
level) is chained once per coin from ``origin`` in blocks and cached. Every interval is an
aggregate of the 1-minute arrays; volumes are multiples of a power-of-two quantum, so every
aggregate is exact under any summation order. Prices lie on a decimal tick (~1e-6 of the base
price). Bit-identical output is guaranteed for one NumPy version on one platform.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pandas as pd

from ingestion.providers.base import FUNDING_COLUMNS, OPEN_INTEREST_COLUMNS
from storage.columns import CANDLE_COLUMNS
from storage.errors import ConfigurationError
from storage.intervals import INTERVAL_SECONDS

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

DAY = 86_400
MINUTES = 1_440  # per day
HOURS = 24
BLOCK_DAYS = 256
DEFAULT_ORIGIN = 1_577_836_800  # 2020-01-01T00:00:00Z
MAX_MINUTES = 2_000_000  # per request: ~110 MB of arrays, about a second of work
MAX_DAYS = 36_500  # how far after origin the market exists
FUNDING_PERIOD = 8 * 3_600
OI_PERIOD = 3_600
SOURCE = "synthetic"
_COARSE, _FINE = 0, 1  # Philox counter word 3: which stream a counter belongs to


@dataclass(frozen=True)
class CoinProfile:
    """Scale of one coin: price, daily vol, market beta, per-minute quote notional, OI."""

    base_price: float
    daily_vol: float
    beta: float
    notional_per_minute: float
    open_interest_notional: float


COIN_PROFILES: dict[str, CoinProfile] = {
    "BTC": CoinProfile(60_000.0, 0.030, 0.90, 2.0e6, 8.0e9),
    "ETH": CoinProfile(3_000.0, 0.040, 0.80, 1.0e6, 4.0e9),
    "SOL": CoinProfile(150.0, 0.055, 0.70, 3.0e5, 1.5e9),
}
DEFAULT_PROFILE = CoinProfile(100.0, 0.050, 0.60, 5.0e4, 5.0e7)

REGIME_VOL = (0.6, 1.0, 2.0)
REGIME_TRANSITION = ((0.97, 0.03, 0.0), (0.03, 0.94, 0.03), (0.0, 0.08, 0.92))
REGIME_JUMPS_PER_DAY = (0.2, 0.5, 1.5)
IDIO_JUMPS_PER_DAY = 0.2
JUMP_SIGMAS = 2.5
JUMP_MINUTES = 3  # a jump is spread evenly over this many consecutive minutes
DRIFT_PER_YEAR = (-0.8, 0.0, 0.8)
DRIFT_STAY = 0.985
MEAN_REVERSION_PER_DAY = 1 / 120  # κ
MARKET_VOL_AR = (0.92, 0.25)  # (phi, stationary sd), daily
COIN_VOL_AR = (0.90, 0.12)  # daily
HOUR_VOL_AR = (0.90, 0.35)  # hourly
OI_AR = (0.97, 0.25)  # daily log open interest
T_DOF = 5.0
SEASON_AMPLITUDE, SEASON_PEAK_HOUR = 0.4, 15
WEEKEND_VOL, WEEKEND_VOLUME = 0.8, 0.6
MINUTE_MIX = (0.08, 5.0)  # probability and variance multiple of a busy minute
WICK = 0.5
VOLUME_NOISE = 0.4
QUANTUM_BITS = 20  # volumes are multiples of 2^(floor(log2 typical) - 20)
TRADES_PER_MINUTE = 800.0
PREMIUM_MOMENTUM, PREMIUM_NOISE = 0.01, 5e-5
FUNDING_INTEREST, FUNDING_CAP = 1e-4, 0.0075
SPREAD_BASE, SPREAD_VOL = 2e-4, 0.5

_SEASON = 1 + SEASON_AMPLITUDE * np.cos(
    2 * np.pi * (np.arange(HOURS) + 0.5 - SEASON_PEAK_HOUR) / 24
)
_SEASON /= np.sqrt(np.mean(_SEASON**2))
_MIX_LOW = (1 - MINUTE_MIX[0] * MINUTE_MIX[1]) / (1 - MINUTE_MIX[0])
_STEPS = np.arange(1, MINUTES + 1, dtype=np.float64)


def stream_key(seed: int, coin: str | None) -> npt.NDArray[np.uint64]:
    """The one place a seed becomes generator state: a Philox key for (seed, coin).

    The coin enters as its UTF-8 bytes read as an integer (stable everywhere, unlike
    ``hash``); ``None`` is the market-wide stream.
    """
    raw = b"" if coin is None else coin.encode("utf-8")
    entropy = [seed, 0] if coin is None else [seed, 1, len(raw), int.from_bytes(raw, "big")]
    state = np.random.SeedSequence(entropy).generate_state(2, np.uint64)
    return state.astype(np.uint64)


def _round(values: Floats, decimals: int) -> Floats:
    """Round half to even on a decimal grid (NumPy's scale, rint, unscale: deterministic)."""
    return cast(Floats, np.round(values, decimals))


def _generator(key: npt.NDArray[np.uint64], index: int, stream: int) -> np.random.Generator:
    """Generator for block/day ``index`` of ``stream``: a Philox counter, no earlier draws."""
    counter = np.array([0, 0, index, stream], dtype=np.uint64)
    return np.random.Generator(np.random.Philox(key=key, counter=counter))


@dataclass(frozen=True)
class _MarketBlock:
    regime: Ints  # (B,)
    drift: Floats  # (B,) per-minute drift of the drift regime
    log_vol: Floats  # (B,) m_d
    shock: Floats  # (B, 24) ξ_mkt
    jump_day: Ints
    jump_minute: Ints
    jump_z: Floats
    end: tuple[int, int, float]  # (regime, drift regime, m) carried to the next block


@dataclass(frozen=True)
class _CoinBlock:
    level: Floats  # (B+1,) log price at each day start
    price: Floats  # (B+1,) tick-rounded exp(level); shared with the neighbouring blocks
    drift: Floats  # (B,) μ_d per minute
    hour_var: Floats  # (B, 24) v
    hour_gauss: Floats  # (B, 24) g
    hour_logp: Floats  # (B, 24) log price at each hour start
    premium_noise: Floats  # (B, 24)
    log_oi: Floats  # (B, 24) log open interest in base units
    volume_factor: Floats  # (B,) weekend volume factor
    jump_day: Ints
    jump_minute: Ints
    jump_size: Floats
    end: tuple[float, float, float, float, float]  # (u, a carry, o, level, price)


def _ar_step(phi_sd: tuple[float, float]) -> tuple[float, float]:
    """(phi, innovation sd) of an AR(1) with the given stationary sd."""
    phi, sd = phi_sd
    return phi, sd * math.sqrt(1 - phi * phi)


def market_block(
    key: npt.NDArray[np.uint64], block: int, start: tuple[int, int, float]
) -> _MarketBlock:
    """Regimes, market log-vol, market hourly shocks and jumps of one block of days."""
    gen = _generator(key, block, _COARSE)
    u_regime, u_drift = gen.random(BLOCK_DAYS), gen.random(BLOCK_DAYS)
    eta = gen.standard_normal(BLOCK_DAYS)
    shock = gen.standard_normal((BLOCK_DAYS, HOURS))
    cum = [tuple(float(x) for x in np.cumsum(row)) for row in REGIME_TRANSITION]
    phi, inn = _ar_step(MARKET_VOL_AR)
    regime, drift_regime, m = start
    regimes = np.empty(BLOCK_DAYS, np.int64)
    drifts, logvol = np.empty(BLOCK_DAYS), np.empty(BLOCK_DAYS)
    half = DRIFT_STAY + (1 - DRIFT_STAY) / 2
    for i in range(BLOCK_DAYS):
        u = float(u_regime[i])
        regime = 0 if u < cum[regime][0] else (1 if u < cum[regime][1] else 2)
        w = float(u_drift[i])
        if w >= DRIFT_STAY:
            drift_regime = (drift_regime + (2 if w >= half else 1)) % 3
        m = phi * m + inn * float(eta[i])
        regimes[i], logvol[i] = regime, m
        drifts[i] = DRIFT_PER_YEAR[drift_regime] / (365 * MINUTES)
    counts = gen.poisson(np.asarray(REGIME_JUMPS_PER_DAY)[regimes])
    total = int(counts.sum())
    minute = gen.integers(0, MINUTES - JUMP_MINUTES + 1, total)
    z = gen.standard_normal(total)
    days = np.repeat(np.arange(BLOCK_DAYS), counts)
    return _MarketBlock(regimes, drifts, logvol, shock, days, minute, z, (regime, drift_regime, m))


def coin_block(
    key: npt.NDArray[np.uint64],
    block: int,
    profile: CoinProfile,
    market: _MarketBlock,
    start: tuple[float, float, float, float, float],
    *,
    first_weekday: int,
    decimals: int,
) -> _CoinBlock:
    """Hourly variances and returns, jumps, levels, premium noise and OI of one block."""
    gen = _generator(key, block, _COARSE)
    eta_u, eta_o = gen.standard_normal(BLOCK_DAYS), gen.standard_normal(BLOCK_DAYS)
    eta_a = gen.standard_normal((BLOCK_DAYS, HOURS))
    chi = gen.standard_gamma(T_DOF / 2, (BLOCK_DAYS, HOURS)) * (2 / T_DOF)
    own = gen.standard_normal((BLOCK_DAYS, HOURS))
    premium_noise = gen.standard_normal((BLOCK_DAYS, HOURS))
    oi_noise = gen.standard_normal((BLOCK_DAYS, HOURS))
    counts = gen.poisson(IDIO_JUMPS_PER_DAY, BLOCK_DAYS)
    idio_minute = gen.integers(0, MINUTES - JUMP_MINUTES + 1, int(counts.sum()))
    idio_z = gen.standard_normal(int(counts.sum()))

    # Hourly log-vol: zero-start AR(1) within each day plus the carried start, decayed.
    phi_a, inn_a = _ar_step(HOUR_VOL_AR)
    within = np.empty((BLOCK_DAYS, HOURS))
    within[:, 0] = inn_a * eta_a[:, 0]
    for k in range(1, HOURS):
        within[:, k] = phi_a * within[:, k - 1] + inn_a * eta_a[:, k]
    phi_u, inn_u = _ar_step(COIN_VOL_AR)
    phi_o, inn_o = _ar_step(OI_AR)
    decay = phi_a**HOURS
    u, carry, o, level, price = start
    us, carries, os_ = np.empty(BLOCK_DAYS), np.empty(BLOCK_DAYS), np.empty(BLOCK_DAYS)
    for i in range(BLOCK_DAYS):
        u = phi_u * u + inn_u * float(eta_u[i])
        o = phi_o * o + inn_o * float(eta_o[i])
        us[i], carries[i], os_[i] = u, carry, o
        carry = decay * carry + float(within[i, -1])
    log_vol = within + phi_a ** np.arange(1, HOURS + 1) * carries[:, None]

    weekday = (first_weekday + np.arange(BLOCK_DAYS)) % 7
    weekend = weekday >= 5
    sd_min = (
        profile.daily_vol
        / math.sqrt(MINUTES)
        * np.asarray(REGIME_VOL)[market.regime]
        * np.exp(market.log_vol + us)
        * np.where(weekend, WEEKEND_VOL, 1.0)
    )
    hour_var = (
        60.0
        * (sd_min**2)[:, None]
        * _SEASON**2
        * np.exp(2 * log_vol - 2 * HOUR_VOL_AR[1] ** 2)
        * ((T_DOF - 2) / T_DOF)
        / chi
    )
    beta = profile.beta
    hour_gauss = np.sqrt(hour_var) * (beta * market.shock + math.sqrt(1 - beta * beta) * own)

    jump_day = np.concatenate([market.jump_day, np.repeat(np.arange(BLOCK_DAYS), counts)])
    jump_minute = np.concatenate([market.jump_minute, idio_minute])
    jump_z = np.concatenate([market.jump_z, idio_z])
    order = np.lexsort((jump_minute, jump_day))
    jump_day = np.repeat(jump_day[order], JUMP_MINUTES)
    jump_minute = np.repeat(jump_minute[order], JUMP_MINUTES) + np.tile(
        np.arange(JUMP_MINUTES), len(order)
    )
    scale = JUMP_SIGMAS * math.sqrt(60.0) / JUMP_MINUTES
    jump_size = np.repeat(jump_z[order], JUMP_MINUTES) * scale * sd_min[jump_day]
    hour_ret = hour_gauss.copy()
    np.add.at(hour_ret, (jump_day, jump_minute // 60), jump_size)
    cum_ret = np.cumsum(hour_ret, axis=1)

    anchor = math.log(profile.base_price)
    levels, drift = np.empty(BLOCK_DAYS + 1), np.empty(BLOCK_DAYS)
    for i in range(BLOCK_DAYS):
        mu = float(market.drift[i]) - MEAN_REVERSION_PER_DAY * (level - anchor) / MINUTES
        levels[i], drift[i] = level, mu
        level = (level + mu * MINUTES) + float(cum_ret[i, -1])
    levels[-1] = level
    prices = _round(np.exp(levels), decimals)
    prices[0] = price  # the boundary price is computed once, by the block that ends there
    hour_logp = levels[:-1, None] + drift[:, None] * (60.0 * np.arange(HOURS))
    hour_logp[:, 1:] += cum_ret[:, :-1]
    log_oi = math.log(profile.open_interest_notional / profile.base_price) + os_[:, None]
    return _CoinBlock(
        level=levels,
        price=prices,
        drift=drift,
        hour_var=hour_var,
        hour_gauss=hour_gauss,
        hour_logp=hour_logp,
        premium_noise=premium_noise,
        log_oi=log_oi + 0.03 * oi_noise,
        volume_factor=np.where(weekend, WEEKEND_VOLUME, 1.0),
        jump_day=jump_day,
        jump_minute=jump_minute,
        jump_size=jump_size,
        end=(u, carry, o, level, float(prices[-1])),
    )


class _Coin:
    """Per-coin constants and the cached chain of coarse blocks."""

    def __init__(self, seed: int, coin: str, profile: CoinProfile) -> None:
        self.key, self.market_key = stream_key(seed, coin), stream_key(seed, None)
        self.profile = profile
        self.decimals = max(0, 6 - math.floor(math.log10(profile.base_price)))
        base_volume = profile.notional_per_minute / profile.base_price
        self.base_volume = base_volume
        self.volume_quantum = 2.0 ** (math.floor(math.log2(base_volume)) - QUANTUM_BITS)
        self.ticket = profile.notional_per_minute / TRADES_PER_MINUTE
        self.blocks: list[_CoinBlock] = []


def day_candles(coin: _Coin, day: int, block: _CoinBlock) -> list[Floats]:
    """The 1440 one-minute bars of ``day``: [open, high, low, close, vol base, vol quote, count]."""
    row = day % BLOCK_DAYS
    gen = _generator(coin.key, day, _FINE)
    beta = coin.profile.beta
    market = _generator(coin.market_key, day, _FINE).standard_normal((HOURS, 60))
    z = beta * market + math.sqrt(1 - beta * beta) * gen.standard_normal((HOURS, 60))
    busy = gen.random((HOURS, 60)) < MINUTE_MIX[0]
    wick = np.abs(gen.standard_normal((2, MINUTES)))
    noise = gen.standard_normal(MINUTES)

    weight = np.where(busy, MINUTE_MIX[1], _MIX_LOW)
    v = block.hour_var[row][:, None]
    var = v * (weight / weight.sum(axis=1, keepdims=True))
    sig = np.sqrt(var)
    y = sig * z
    y += (var / v) * (block.hour_gauss[row][:, None] - y.sum(axis=1, keepdims=True))
    ret = y.ravel()
    jumps = block.jump_day == row
    np.add.at(ret, block.jump_minute[jumps], block.jump_size[jumps])
    sig = sig.ravel()

    log_close = (block.level[row] + block.drift[row] * _STEPS) + np.cumsum(ret)
    close = _round(np.exp(log_close), coin.decimals)
    close[-1] = block.price[row + 1]
    open_ = np.empty(MINUTES)
    open_[0], open_[1:] = block.price[row], close[:-1]
    high = _round(np.maximum(open_, close) * np.exp(WICK * sig * wick[0]), coin.decimals)
    low = _round(np.minimum(open_, close) * np.exp(-WICK * sig * wick[1]), coin.decimals)

    ref = coin.profile.daily_vol / math.sqrt(MINUTES)
    busyness = (sig / ref) * (0.6 + 0.4 * np.abs(ret) / sig)
    lognormal = np.exp(VOLUME_NOISE * noise - VOLUME_NOISE**2 / 2)
    raw = coin.base_volume * block.volume_factor[row] * np.clip(busyness * lognormal, 1e-3, 1e3)
    q_base = coin.volume_quantum
    volume = np.maximum(np.rint(raw / q_base), 1.0) * q_base
    q_quote = 2.0 ** (math.floor(math.log2(coin.base_volume * block.price[row])) - QUANTUM_BITS)
    quote = np.maximum(np.rint(volume * ((high + low + close) / 3) / q_quote), 1.0) * q_quote
    trades = np.floor(quote / coin.ticket) + 1.0
    return [open_, high, low, close, volume, quote, trades]


def _empty(columns: tuple[str, ...]) -> pd.DataFrame:
    """A frame with no rows but the right columns and dtypes."""
    text = {"coin", "interval", "source"}
    return pd.DataFrame(
        {
            c: pd.Series([], dtype="str" if c in text else ("int64" if c == "ts" else "float64"))
            for c in columns
        }
    )


class SyntheticProvider:
    """A deterministic offline market for a seed; implements ``Provider``.

    Only closed bars are returned, and none older than ``history_days`` before ``now`` or
    before ``origin`` (a UTC midnight). Any coin name works; ``coins_base_price`` overrides
    the starting price (BTC 60000, ETH 3000, SOL 150, anything else 100). ``SYN-BTC`` has
    BTC's profile under its own random stream: the name that keeps a synthetic series apart
    from a real BTC in one database.
    """

    name = SOURCE
    source = SOURCE

    def __init__(
        self,
        seed: int = 7,
        coins_base_price: dict[str, float] | None = None,
        history_days: int = 120,
        origin: int = DEFAULT_ORIGIN,
    ) -> None:
        if not isinstance(seed, int) or seed < 0:
            raise ConfigurationError(f"seed must be a non-negative integer, got {seed!r}")
        if history_days < 1:
            raise ConfigurationError(f"history_days must be >= 1, got {history_days}")
        if origin % DAY:
            raise ConfigurationError(
                f"origin must be a UTC midnight (multiple of {DAY}), got {origin}"
            )
        prices = dict(coins_base_price or {})
        for coin, price in prices.items():
            if not (math.isfinite(price) and price > 0):
                raise ConfigurationError(f"base price of {coin} must be > 0, got {price!r}")
        self.seed, self.history_days, self.origin = seed, history_days, origin
        self._prices = prices
        self._market_key = stream_key(seed, None)
        self._market: list[_MarketBlock] = []
        self._coins: dict[str, _Coin] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ public interface

    def fetch_candles(
        self, coin: str, interval: str, start: int, end: int, *, now: int | None = None
    ) -> pd.DataFrame:
        """Closed candles with ``start <= ts <= end``; every interval aggregates the 1m bars."""
        step = INTERVAL_SECONDS.get(interval)
        if step is None:
            valid = ", ".join(INTERVAL_SECONDS)
            raise ConfigurationError(f"unknown interval {interval!r}; valid intervals: {valid}")
        lo, hi = self._window(start, end, step, now, closed=True)
        if hi < lo:
            return _empty(CANDLE_COLUMNS)
        m0 = (lo - self.origin) // 60
        m1 = (hi + step - self.origin) // 60
        arrays = self._minutes(coin, m0, m1)
        k = step // 60
        if k > 1:
            o, h, lw, c, *sums = (a.reshape(-1, k) for a in arrays)
            arrays = [
                o[:, 0],
                h.max(axis=1),
                lw.min(axis=1),
                c[:, -1],
                *(s.sum(axis=1) for s in sums),
            ]
        n = len(arrays[0])
        return pd.DataFrame(
            {
                "coin": pd.Series([coin] * n, dtype="str"),
                "interval": pd.Series([interval] * n, dtype="str"),
                "ts": np.arange(lo, hi + 1, step, dtype=np.int64),
                **dict(zip(CANDLE_COLUMNS[3:-1], arrays, strict=True)),
                "source": pd.Series([SOURCE] * n, dtype="str"),
            }
        )

    def fetch_snapshot(self, coin: str, *, now: int | None = None) -> dict[str, Any]:
        """Last closed 1m close, a vol-dependent spread, 24h volumes, premium, funding, OI."""
        now_s = int(time.time()) if now is None else int(now)
        last = (now_s - self.origin) // 60 - 1
        if last < 0:
            raise ConfigurationError(f"the synthetic market starts at {self.origin}; now={now_s}")
        self._check_horizon(now_s)
        _, _, _, close, volume, quote, _ = self._minutes(coin, max(0, last - MINUTES + 1), last + 1)
        model = self._coin(coin)
        hour = np.array([(now_s - self.origin) // 3_600], dtype=np.int64)
        premium_now = self._premium(model, hour)
        premium = float(premium_now[0])
        sd = math.sqrt(float(self._hourly(model, "hour_var", hour)[0]) / 60)
        half = (SPREAD_BASE + SPREAD_VOL * sd) / 2
        price = float(close[-1])
        return {
            "coin": coin,
            "ts": now_s,
            "last_price": price,
            "bid": round(price * (1 - half), model.decimals),
            "ask": round(price * (1 + half), model.decimals),
            "mark_price": price * (1 + premium),
            "index_price": price,
            "volume_base_24h": float(volume.sum()),
            "volume_quote_24h": float(quote.sum()),
            "funding_rate": float(_funding_rate(premium_now)[0]),
            "open_interest": float(np.exp(self._hourly(model, "log_oi", hour)[0])),
            "source": SOURCE,
        }

    def fetch_funding(
        self, coin: str, start: int, end: int, *, now: int | None = None
    ) -> pd.DataFrame:
        """Settlements at 00/08/16 UTC: rate = clamp(premium + 1e-4, ±0.75%), mark price."""
        lo, hi = self._window(start, end, FUNDING_PERIOD, now, closed=False)
        if hi < lo:
            return _empty(FUNDING_COLUMNS)
        ts = np.arange(lo, hi + 1, FUNDING_PERIOD, dtype=np.int64)
        model = self._coin(coin)
        premium = self._premium(model, (ts - self.origin) // 3_600)
        rate = _funding_rate(premium)
        mark = self._prices_at(coin, ts) * (1 + premium)
        return self._frame(FUNDING_COLUMNS, coin, ts, rate, mark)

    def fetch_open_interest(
        self, coin: str, start: int, end: int, *, now: int | None = None
    ) -> pd.DataFrame:
        """Hourly open interest: log OI is a daily AR(1) around the coin's level plus noise."""
        lo, hi = self._window(start, end, OI_PERIOD, now, closed=False)
        if hi < lo:
            return _empty(OPEN_INTEREST_COLUMNS)
        ts = np.arange(lo, hi + 1, OI_PERIOD, dtype=np.int64)
        model = self._coin(coin)
        oi = np.exp(self._hourly(model, "log_oi", (ts - self.origin) // 3_600))
        return self._frame(OPEN_INTEREST_COLUMNS, coin, ts, oi, oi * self._prices_at(coin, ts))

    def close(self) -> None:
        """Nothing to release."""

    # ------------------------------------------------------------------ internals

    def _window(
        self, start: int, end: int, step: int, now: int | None, *, closed: bool
    ) -> tuple[int, int]:
        """Aligned [lo, hi] of the request, clipped to origin, history and ``now``."""
        now_s = int(time.time()) if now is None else int(now)
        newest = now_s - step if closed else now_s
        cutoff = (now_s - self.history_days * DAY) // step * step
        lo = max(-(-int(start) // step) * step, self.origin, cutoff)
        hi = min(int(end) // step * step, newest // step * step)
        if hi >= lo:
            span = (hi - lo) // 60 + max(1, step // 60)
            if span > MAX_MINUTES:
                raise ConfigurationError(
                    f"request spans {span} one-minute bars, over the limit of {MAX_MINUTES}; "
                    "ask for a shorter range"
                )
            self._check_horizon(hi)
        return lo, hi

    def _check_horizon(self, ts: int) -> None:
        if ts - self.origin >= MAX_DAYS * DAY:
            raise ConfigurationError(f"the synthetic market ends {MAX_DAYS} days after origin")

    def _coin(self, coin: str) -> _Coin:
        if not (isinstance(coin, str) and 0 < len(coin) <= 20):
            raise ConfigurationError(f"coin must be a name of 1 to 20 characters, got {coin!r}")
        with self._lock:
            model = self._coins.get(coin)
            if model is None:
                # SYN-BTC (a synthetic series kept apart from a real BTC) looks like BTC
                profile = COIN_PROFILES.get(coin.removeprefix("SYN-"), DEFAULT_PROFILE)
                if coin in self._prices:
                    profile = replace(profile, base_price=self._prices[coin])
                model = self._coins[coin] = _Coin(self.seed, coin, profile)
            return model

    def _block(self, model: _Coin, index: int) -> _CoinBlock:
        """Coarse block ``index`` of a coin, chaining (and caching) every earlier block."""
        with self._lock:
            while len(self._market) <= index:
                b = len(self._market)
                start = self._market[-1].end if self._market else (1, 1, 0.0)
                self._market.append(market_block(self._market_key, b, start))
            while len(model.blocks) <= index:
                b = len(model.blocks)
                if model.blocks:
                    state = model.blocks[-1].end
                else:
                    level = math.log(model.profile.base_price)
                    state = (0.0, 0.0, 0.0, level, round(model.profile.base_price, model.decimals))
                first_day = self.origin // DAY + b * BLOCK_DAYS
                model.blocks.append(
                    coin_block(
                        model.key,
                        b,
                        model.profile,
                        self._market[b],
                        state,
                        first_weekday=(first_day + 3) % 7,
                        decimals=model.decimals,
                    )
                )
            return model.blocks[index]

    def _minutes(self, coin: str, m0: int, m1: int) -> list[Floats]:
        """The seven 1-minute arrays for minutes [m0, m1) after origin."""
        model = self._coin(coin)
        d0, d1 = m0 // MINUTES, (m1 - 1) // MINUTES
        out = [np.empty((d1 - d0 + 1) * MINUTES) for _ in range(7)]
        for d in range(d0, d1 + 1):
            at = (d - d0) * MINUTES
            for dst, src in zip(
                out, day_candles(model, d, self._block(model, d // BLOCK_DAYS)), strict=True
            ):
                dst[at : at + MINUTES] = src
        cut = m0 - d0 * MINUTES
        return [a[cut : cut + m1 - m0] for a in out]

    def _prices_at(self, coin: str, ts: Ints) -> Floats:
        """Price at each instant: the open of the minute starting there (= previous close)."""
        minutes = (ts - self.origin) // 60
        out = np.empty(len(ts))
        days = minutes // MINUTES
        model = self._coin(coin)
        for d in np.unique(days):
            sel = days == d
            opens = day_candles(model, int(d), self._block(model, int(d) // BLOCK_DAYS))[0]
            out[sel] = opens[minutes[sel] % MINUTES]
        return out

    def _hourly(self, model: _Coin, field: str, hours: Ints) -> Floats:
        """Gather a (day, hour) coarse field at hour indices after origin."""
        out = np.empty(len(hours))
        days = hours // HOURS
        blocks = days // BLOCK_DAYS
        for b in np.unique(blocks):
            sel = blocks == b
            values: Floats = getattr(self._block(model, int(b)), field)
            out[sel] = values[days[sel] % BLOCK_DAYS, hours[sel] % HOURS]
        return out

    def _premium(self, model: _Coin, hours: Ints) -> Floats:
        """Perp premium: PREMIUM_MOMENTUM × 8h log return + noise (perps run rich in rallies)."""
        now_lp = self._hourly(model, "hour_logp", hours)
        then_lp = self._hourly(model, "hour_logp", np.maximum(hours - 8, 0))
        noise = self._hourly(model, "premium_noise", hours)
        return PREMIUM_MOMENTUM * (now_lp - then_lp) + PREMIUM_NOISE * noise

    @staticmethod
    def _frame(columns: tuple[str, ...], coin: str, ts: Ints, a: Floats, b: Floats) -> pd.DataFrame:
        n = len(ts)
        return pd.DataFrame(
            {
                columns[0]: pd.Series([coin] * n, dtype="str"),
                columns[1]: ts,
                columns[2]: a,
                columns[3]: b,
                columns[4]: pd.Series([SOURCE] * n, dtype="str"),
            }
        )


def _funding_rate(premium: Floats) -> Floats:
    """Funding per period: premium plus the interest leg, capped, on an 8-decimal grid."""
    return _round(np.clip(premium + FUNDING_INTEREST, -FUNDING_CAP, FUNDING_CAP), 8)
