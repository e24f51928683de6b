"""Feature store: deterministic, incremental = bulk bit for bit, no look-ahead, never stale.

Runs on SQLite and Postgres. The candles are the real BTC 4h file (18k bars with real gaps)
when available, a seeded geometric random walk otherwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.orm import Session, sessionmaker

from compute.indicators.pipeline import compute_indicators
from ingestion.fileimport import parse_candle_file
from serve_app.services.features import (
    BLOCK,
    LOOKBACK,
    compute_blocks,
    feature_set,
    materialize,
    read_fresh,
)
from storage.candles import CandleRepository
from storage.engine import transaction
from storage.features import FeatureRepository
from tests.conftest import shared_data_dir

H4 = 4 * 3600


def candles() -> pd.DataFrame:
    data = shared_data_dir()
    if data is not None:
        path = data / "binance_spot_BTCUSDT_4h_2017-2026.csv"
        frame = parse_candle_file(Path(path), coin="BTC", interval="4h").frame
        return frame.iloc[:9000].reset_index(drop=True)
    n = 9000
    close = 100 * np.exp(np.cumsum(np.random.default_rng(3).normal(0, 0.01, n)))
    return pd.DataFrame(
        {"coin": "BTC", "interval": "4h", "ts": 1_500_000_000 // H4 * H4 + H4 * np.arange(n),
         "open": close, "high": close * 1.01, "low": close * 0.99, "close": close,
         "volume_base": 1.0, "volume_quote": np.nan, "trade_count": np.nan, "source": "t"}
    )  # fmt: skip


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return candles()


def store(sessions: sessionmaker[Session], frame: pd.DataFrame) -> None:
    with transaction(sessions) as s:
        CandleRepository(s).upsert(frame)


def stored_rows(sessions: sessionmaker[Session]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with sessions() as s:
        rows = FeatureRepository(s).read("BTC", "4h", feature_set("4h").version)
    return rows.ts, rows.fingerprints, rows.values


def test_incremental_equals_bulk_bit_for_bit(
    sessions: sessionmaker[Session], bars: pd.DataFrame
) -> None:
    head = len(bars) - 2 * BLOCK - 137
    store(sessions, bars.iloc[:head])
    assert materialize(sessions, "BTC", "4h") == head
    store(sessions, bars.iloc[head:])
    written = materialize(sessions, "BTC", "4h")  # the newest stored block and what follows
    assert len(bars) - head <= written <= len(bars) - head + BLOCK
    ts, fps, values = stored_rows(sessions)
    assert ts.tolist() == bars["ts"].tolist()
    assert materialize(sessions, "BTC", "4h", full=True) == len(bars)
    _, fps2, values2 = stored_rows(sessions)
    assert values.tobytes() == values2.tobytes() and (fps == fps2).all()


def test_rows_agree_with_the_kernels_on_the_whole_series(
    sessions: sessionmaker[Session], bars: pd.DataFrame
) -> None:
    store(sessions, bars)
    materialize(sessions, "BTC", "4h")
    fs = feature_set("4h")
    _, _, values = stored_rows(sessions)
    whole = compute_indicators(
        fs.spec, bars["open"], bars["high"], bars["low"], bars["close"], bars["volume_base"],
        bars["ts"],
    )  # fmt: skip
    # past the first window, block-windowed values equal a whole-history computation: the
    # look-back is long enough for every recursion used
    tail = slice(LOOKBACK + BLOCK, None)
    for i, column in enumerate(fs.columns):
        np.testing.assert_allclose(
            values[tail, i], np.asarray(whole[column], np.float64)[tail], rtol=1e-9, atol=1e-12,
            err_msg=column,
        )  # fmt: skip


def test_no_look_ahead(bars: pd.DataFrame) -> None:
    fs = feature_set("4h")
    full = compute_blocks(bars, fs, H4)
    for t in np.random.default_rng(7).integers(1, len(bars), 5):
        part = compute_blocks(bars.iloc[: t + 1], fs, H4)
        assert np.array_equal(full.values[t], part.values[t], equal_nan=True), t
        assert full.fingerprints[t] == part.fingerprints[t]


def test_stale_rows_are_recomputed_not_served(
    sessions: sessionmaker[Session], bars: pd.DataFrame
) -> None:
    store(sessions, bars)
    materialize(sessions, "BTC", "4h")
    with sessions() as s:
        _, fresh, recomputed = read_fresh(s, "BTC", "4h", limit=50)
    assert recomputed == 0 and len(fresh.ts) == 50
    # a late correction of a candle inside the requested rows' windows
    changed = bars.iloc[[len(bars) - 60]].copy()
    changed["close"] *= 1.05
    changed["high"] = np.maximum(changed["high"], changed["close"])
    store(sessions, changed)
    with sessions() as s:
        fs, served, recomputed = read_fresh(s, "BTC", "4h", limit=50)
        stale = FeatureRepository(s).read("BTC", "4h", fs.version, start=int(served.ts[0]))
    assert recomputed > 0
    expected = compute_blocks(
        pd.concat([bars.iloc[: len(bars) - 60], changed, bars.iloc[len(bars) - 59 :]]),
        fs, H4,
    )  # fmt: skip
    assert served.values.tobytes() == expected.values[-50:].tobytes()
    assert served.values.tobytes() != stale.values[-50:].tobytes()


@pytest.mark.ray
def test_ray_data_build_writes_every_row_once(
    sessions: sessionmaker[Session],
    database_url: str,
    bars: pd.DataFrame,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ray

    from serve_app.services import feature_build
    from serve_app.services.feature_build import build
    from storage.runs import RunRepository

    monkeypatch.setattr(feature_build, "BLOCKS_PER_TASK", 2)  # several tasks for 5 blocks
    from serve_app.settings import Settings

    store(sessions, bars)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = build(Settings(database_url=database_url), ["BTC"], ["4h"], full=True)
    finally:
        ray.shutdown()
    assert summary["rows_written"] == len(bars) and summary["tasks"] >= 3
    with sessions() as session:  # recorded as a run, its progress in blocks
        run = RunRepository(session).get(summary["run_id"])
    assert run is not None and run.kind == "features" and run.status == "succeeded"
    assert run.progress is not None and run.progress["done"] == run.progress["total"] >= 5
    assert run.summary is not None and run.summary["rows_written"] == len(bars)
    ts, _, values = stored_rows(sessions)
    assert ts.tolist() == bars["ts"].tolist()
    expected = compute_blocks(bars, feature_set("4h"), H4)
    assert values.tobytes() == expected.values.tobytes()  # Ray Data build == local, bit for bit


@pytest.mark.ray
def test_refresher_actor_materialises_stored_candles(
    sessions: sessionmaker[Session], database_url: str, bars: pd.DataFrame
) -> None:
    import time

    import ray

    from serve_app.feature_refresher import get_or_create

    store(sessions, bars.iloc[:3000])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        actor = get_or_create(database_url, [("BTC", "4h")], name="refresher-test")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            ts, _, _ = stored_rows(sessions)
            if len(ts) == 3000:
                break
            time.sleep(0.5)
        status = ray.get(actor.stop.remote(), timeout=60)
        ray.kill(actor, no_restart=True)
    finally:
        ray.shutdown()
    assert stored_rows(sessions)[0].tolist() == bars["ts"].iloc[:3000].tolist()
    assert status["series"]["BTC:4h"]["rows_written"] >= 3000
    assert status["series"]["BTC:4h"]["last_error"] is None
