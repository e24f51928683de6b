"""Tests for ingestion.providers.synthetic: determinism, exact aggregation, the wall clock, the
stylised facts of crypto returns, and the derivatives feeds.

Expected values come from the contracts (closed bars only, aggregates of the 1m bars, 8h
funding marks) recomputed here with pandas, never from the provider's internals.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ingestion.providers.base import FUNDING_COLUMNS, OPEN_INTEREST_COLUMNS, Provider
from ingestion.providers.synthetic import SyntheticProvider
from storage.columns import CANDLE_COLUMNS
from storage.engine import make_engine, session_factory
from storage.errors import ConfigurationError
from storage.intervals import INTERVAL_SECONDS
from storage.migrate import upgrade
from storage.snapshots import SNAPSHOT_FIELDS, SnapshotRepository
from storage.validation import prepare_candles

DAY = 86_400
MIDNIGHT = 1_717_200_000  # 2024-06-01 00:00:00 UTC
NOW = MIDNIGHT + 37 * 60 + 5  # mid-hour, mid-minute: 00:37:05
VALUES = ["open", "high", "low", "close", "volume_base", "volume_quote", "trade_count"]


@pytest.fixture(scope="module")
def provider() -> SyntheticProvider:
    return SyntheticProvider(seed=11)


def aggregate(minutes: pd.DataFrame, step: int) -> pd.DataFrame:
    """Bars of ``step`` seconds from 1m bars, by the contract: first/max/min/last/sum."""
    grouped = minutes.groupby(minutes["ts"] // step * step)
    out = grouped.agg(
        open=("open", "first"),
        high=("high", "max"),
        low=("low", "min"),
        close=("close", "last"),
        volume_base=("volume_base", "sum"),
        volume_quote=("volume_quote", "sum"),
        trade_count=("trade_count", "sum"),
    )
    return out.rename_axis("ts").reset_index()


def acf(x: np.ndarray, lag: int) -> float:
    x = x - x.mean()
    return float((x[:-lag] * x[lag:]).sum() / (x * x).sum())


# --------------------------------------------------------------------------- interface


def test_is_a_provider_and_close_is_a_no_op(provider: SyntheticProvider) -> None:
    assert isinstance(provider, Provider)
    assert provider.name == "synthetic"
    provider.close()
    assert len(provider.fetch_candles("BTC", "1h", MIDNIGHT - DAY, NOW, now=NOW)) == 24


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_frames_different_seed_different() -> None:
    a, b, c = SyntheticProvider(seed=5), SyntheticProvider(seed=5), SyntheticProvider(seed=6)
    for interval, span in (("1m", DAY), ("1h", 10 * DAY)):
        fa = a.fetch_candles("ETH", interval, NOW - span, NOW, now=NOW)
        fb = b.fetch_candles("ETH", interval, NOW - span, NOW, now=NOW)
        fc = c.fetch_candles("ETH", interval, NOW - span, NOW, now=NOW)
        pd.testing.assert_frame_equal(fa, fb, check_exact=True)
        assert len(fa) == len(fc)
        assert not np.array_equal(fa["close"].to_numpy(), fc["close"].to_numpy())
    assert a.fetch_snapshot("ETH", now=NOW) == b.fetch_snapshot("ETH", now=NOW)


@pytest.mark.parametrize(("interval", "span"), [("1m", 3 * DAY), ("1h", 20 * DAY)])
def test_range_equals_pieces_fetched_in_any_order(
    provider: SyntheticProvider, interval: str, span: int
) -> None:
    start, end = NOW - span, NOW
    whole = provider.fetch_candles("SOL", interval, start, end, now=NOW)
    rng = np.random.default_rng(2024)
    cuts = np.sort(rng.integers(start, end, 7))
    edges = [start, *cuts.tolist(), end + 1]
    pieces = [(lo, hi - 1) for lo, hi in itertools.pairwise(edges)]
    rng.shuffle(pieces)
    fresh = SyntheticProvider(seed=11)  # a second instance, with an empty cache
    fresh.fetch_candles("SOL", "1d", NOW - 90 * DAY, NOW - 80 * DAY, now=NOW)  # unrelated first
    parts = [fresh.fetch_candles("SOL", interval, lo, hi, now=NOW) for lo, hi in pieces]
    joined = pd.concat(parts).sort_values("ts").reset_index(drop=True)
    pd.testing.assert_frame_equal(joined, whole, check_exact=True)


# --------------------------------------------------------------------------- aggregation


@pytest.mark.parametrize("interval", ["1h", "4h", "1d"])
def test_every_interval_is_the_exact_aggregate_of_its_1m_bars(
    provider: SyntheticProvider, interval: str
) -> None:
    step = INTERVAL_SECONDS[interval]
    start, end = MIDNIGHT - 3 * DAY, MIDNIGHT - 1
    minutes = provider.fetch_candles("BTC", "1m", start, end, now=NOW)
    assert len(minutes) == 3 * 1440
    expected = aggregate(minutes, step)
    got = provider.fetch_candles("BTC", interval, start, end, now=NOW)
    assert got["ts"].tolist() == expected["ts"].tolist()
    for col in VALUES:  # exactly equal, not approximately
        assert np.array_equal(got[col].to_numpy(), expected[col].to_numpy()), col


# --------------------------------------------------------------------------- validity


@pytest.mark.parametrize("interval", list(INTERVAL_SECONDS))
def test_frames_pass_validation_and_are_consistent(
    provider: SyntheticProvider, interval: str
) -> None:
    step = INTERVAL_SECONDS[interval]
    frame = provider.fetch_candles("DOGE", interval, NOW - 2 * DAY, NOW, now=NOW)
    assert tuple(frame.columns) == CANDLE_COLUMNS
    assert frame["ts"].dtype == np.int64
    assert all(frame[c].dtype == np.float64 for c in VALUES)
    assert len(prepare_candles(frame)) == len(frame) > 0
    ts = frame["ts"].to_numpy()
    assert (ts % step == 0).all() and (np.diff(ts) == step).all()
    o, h, lo, c = (frame[k].to_numpy() for k in ("open", "high", "low", "close"))
    assert (h >= np.maximum(o, c)).all() and (lo <= np.minimum(o, c)).all() and (lo > 0).all()
    assert (frame["volume_base"] > 0).all() and (frame["volume_quote"] > 0).all()
    count = frame["trade_count"].to_numpy()
    assert (count >= 1).all() and (count == np.floor(count)).all()
    vwap = frame["volume_quote"] / frame["volume_base"]
    assert ((vwap > 0.99 * frame["low"]) & (vwap < 1.01 * frame["high"])).all()
    assert set(frame["coin"]) == {"DOGE"} and set(frame["source"]) == {"synthetic"}


def test_1m_open_is_the_previous_close_across_days(provider: SyntheticProvider) -> None:
    frame = provider.fetch_candles("ETH", "1m", MIDNIGHT - 3 * DAY - 600, NOW, now=NOW)
    opens, closes = frame["open"].to_numpy(), frame["close"].to_numpy()
    assert np.array_equal(opens[1:], closes[:-1])


def test_unknown_coins_work_and_base_prices_can_be_set() -> None:
    origin = MIDNIGHT - 5 * DAY
    p = SyntheticProvider(coins_base_price={"XYZ": 2.5}, origin=origin)
    frame = p.fetch_candles("XYZ", "1m", origin, origin + 3_600, now=NOW)
    assert frame["ts"].iloc[0] == origin and frame["open"].iloc[0] == 2.5
    other = p.fetch_candles("NEWCOIN", "1h", 0, NOW, now=NOW)
    assert len(prepare_candles(other)) == len(other) > 0
    assert 20 < other["close"].median() < 500  # near the default base price of 100


# --------------------------------------------------------------------------- wall clock


@pytest.mark.parametrize("interval", ["1m", "5m", "1h", "4h", "1d"])
def test_only_closed_bars_and_the_newest_is_the_last_closed(
    provider: SyntheticProvider, interval: str
) -> None:
    step = INTERVAL_SECONDS[interval]
    frame = provider.fetch_candles("BTC", interval, NOW - 3 * DAY, NOW + DAY, now=NOW)
    ts = frame["ts"].to_numpy()
    assert (ts + step <= NOW).all()
    assert ts[-1] == NOW // step * step - step
    on_boundary = MIDNIGHT + 3_600  # a bar closing exactly at now is closed
    hourly = provider.fetch_candles("BTC", "1h", MIDNIGHT - DAY, NOW, now=on_boundary)
    assert hourly["ts"].iloc[-1] == MIDNIGHT


def test_history_cutoff_origin_and_alignment() -> None:
    p = SyntheticProvider(history_days=3)
    frame = p.fetch_candles("BTC", "1h", 0, NOW, now=NOW)
    cutoff = (NOW - 3 * DAY) // 3_600 * 3_600
    assert frame["ts"].iloc[0] == cutoff and len(frame) == (NOW // 3_600 * 3_600 - cutoff) // 3_600
    start = cutoff + 3_600 + 1  # not aligned: snaps up to the next bar
    assert p.fetch_candles("BTC", "1h", start, NOW, now=NOW)["ts"].iloc[0] == cutoff + 7_200
    young = SyntheticProvider(origin=MIDNIGHT - 2 * DAY)
    first = young.fetch_candles("BTC", "1h", MIDNIGHT - 10 * DAY, NOW, now=NOW)
    assert first["ts"].iloc[0] == MIDNIGHT - 2 * DAY


def test_empty_frames_outside_the_market(provider: SyntheticProvider) -> None:
    future = provider.fetch_candles("BTC", "1m", NOW + 60, NOW + DAY, now=NOW)
    before = SyntheticProvider(origin=MIDNIGHT).fetch_candles("BTC", "1h", 0, NOW, now=MIDNIGHT)
    for frame in (future, before):
        assert frame.empty and tuple(frame.columns) == CANDLE_COLUMNS
        assert frame["ts"].dtype == np.int64 and prepare_candles(frame).empty
    assert provider.fetch_funding("BTC", NOW + DAY, NOW + 2 * DAY, now=NOW).empty


# --------------------------------------------------------------------------- stylised facts


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stylised_facts_of_returns(seed: int) -> None:
    p = SyntheticProvider(seed=seed, history_days=60)
    hourly = p.fetch_candles("BTC", "1h", 0, MIDNIGHT, now=MIDNIGHT)
    r = np.diff(np.log(hourly["close"].to_numpy()))
    assert len(r) == 60 * 24 - 1
    z = (r - r.mean()) / r.std()
    assert (z**4).mean() - 3 > 2.0  # fat tails: excess kurtosis of 1h log-returns
    abs_acf = [acf(np.abs(r), lag) for lag in range(1, 11)]
    assert np.mean(abs_acf) > 0.04 and sum(a > 0 for a in abs_acf) >= 8  # vol clustering
    assert abs(acf(r, 1)) < 0.15  # ... while returns themselves are barely autocorrelated

    minutes = p.fetch_candles("BTC", "1m", 0, MIDNIGHT, now=MIDNIGHT)
    lr = np.diff(np.log(minutes["close"].to_numpy()))
    day = minutes["ts"].to_numpy()[1:] // DAY
    realised = np.sqrt(np.bincount(day - day.min(), weights=lr**2))
    assert realised.max() / realised.min() > 2.0  # regimes: daily realised vol varies


def test_coins_are_correlated_with_btc(provider: SyntheticProvider) -> None:
    closes = {
        c: provider.fetch_candles(c, "1h", NOW - 60 * DAY, NOW, now=NOW)["close"].to_numpy()
        for c in ("BTC", "ETH")
    }
    btc, eth = (np.diff(np.log(x)) for x in closes.values())
    assert 0.2 < np.corrcoef(btc, eth)[0, 1] < 0.95


# --------------------------------------------------------------------------- derivatives


def test_snapshot_is_a_valid_row(provider: SyntheticProvider, tmp_path: Path) -> None:
    snap = provider.fetch_snapshot("BTC", now=NOW)
    assert set(snap) == set(SNAPSHOT_FIELDS) and snap["ts"] == NOW and snap["coin"] == "BTC"
    last = provider.fetch_candles("BTC", "1m", NOW - DAY - 60, NOW, now=NOW)
    assert len(last) == 1440
    assert snap["last_price"] == last["close"].iloc[-1] == snap["index_price"]
    assert snap["volume_base_24h"] == last["volume_base"].sum()
    assert snap["volume_quote_24h"] == last["volume_quote"].sum()
    assert 0 < snap["bid"] < snap["last_price"] < snap["ask"]
    assert snap["ask"] / snap["bid"] - 1 < 0.005
    assert abs(snap["mark_price"] / snap["last_price"] - 1) < 0.01
    assert abs(snap["funding_rate"]) <= 0.0075 and snap["open_interest"] > 0

    url = f"sqlite:///{tmp_path / 'snap.db'}"
    upgrade(url)
    engine = make_engine(url)
    with session_factory(engine)() as session, session.begin():
        rows = [provider.fetch_snapshot(c, now=NOW) for c in ("BTC", "ETH", "PEPE")]
        assert SnapshotRepository(session).upsert(rows, now=NOW) == 3
    engine.dispose()


def test_funding_settles_every_8h_at_the_marks(provider: SyntheticProvider) -> None:
    start, end = NOW - 30 * DAY + 1, NOW + DAY
    funding = provider.fetch_funding("ETH", start, end, now=NOW)
    assert tuple(funding.columns) == FUNDING_COLUMNS
    ts = funding["ts"].to_numpy()
    assert len(ts) == 90 and (ts % 28_800 == 0).all() and (np.diff(ts) == 28_800).all()
    assert set((ts % DAY) // 3_600) == {0, 8, 16}
    assert ts[0] >= start and ts[-1] <= NOW
    rate = funding["funding_rate"].to_numpy()
    assert (np.abs(rate) <= 0.0075).all() and rate.std() > 0
    minutes = provider.fetch_candles("ETH", "1m", ts[0], ts[-1], now=NOW).set_index("ts")
    price = minutes.loc[ts, "open"].to_numpy()  # the price at the settlement instant
    assert (np.abs(funding["mark_price"].to_numpy() / price - 1) < 0.01).all()
    again = SyntheticProvider(seed=11).fetch_funding("ETH", start, end, now=NOW)
    pd.testing.assert_frame_equal(funding, again, check_exact=True)


def test_open_interest_is_hourly_positive_and_mean_reverting(provider: SyntheticProvider) -> None:
    oi = provider.fetch_open_interest("SOL", NOW - 100 * DAY, NOW, now=NOW)
    assert tuple(oi.columns) == OPEN_INTEREST_COLUMNS
    ts = oi["ts"].to_numpy()
    assert (ts % 3_600 == 0).all() and (np.diff(ts) == 3_600).all() and ts[-1] <= NOW
    amount = oi["open_interest"].to_numpy()
    assert (amount > 0).all() and amount.max() / amount.min() < 20
    assert (oi["open_interest_quote"] > 0).all()


# --------------------------------------------------------------------------- errors


def test_configuration_errors() -> None:
    p = SyntheticProvider(history_days=3_000)
    with pytest.raises(ConfigurationError, match=r"valid intervals: 1m.*1d"):
        p.fetch_candles("BTC", "7m", 0, NOW, now=NOW)
    with pytest.raises(ConfigurationError, match="limit"):
        p.fetch_candles("BTC", "1d", 0, NOW, now=NOW)  # ~2,900 days of minutes
    assert len(p.fetch_candles("BTC", "1d", MIDNIGHT - 30 * DAY, NOW, now=NOW)) == 30
    with pytest.raises(ConfigurationError):
        SyntheticProvider(origin=MIDNIGHT + 1)
    with pytest.raises(ConfigurationError):
        SyntheticProvider(seed=-1)
    with pytest.raises(ConfigurationError):
        SyntheticProvider(coins_base_price={"BTC": 0.0})
    with pytest.raises(ConfigurationError):
        p.fetch_snapshot("", now=NOW)
