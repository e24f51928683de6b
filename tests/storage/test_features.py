"""Feature store rows and candle fingerprints, on SQLite and Postgres."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.orm import Session, sessionmaker

from storage.engine import transaction
from storage.errors import DataIntegrityError
from storage.features import FeatureRepository, FeatureRows
from storage.fingerprint import prefix_fingerprints, series_fingerprint
from storage.models import FeatureSet


def bars(n: int) -> pd.DataFrame:
    close = 100.0 + np.arange(n)
    return pd.DataFrame(
        {"ts": 3600 * np.arange(n), "open": close, "high": close + 1, "low": close - 1,
         "close": close, "volume_base": np.ones(n)}
    )  # fmt: skip


def test_prefix_fingerprint_changes_from_the_edited_bar_on() -> None:
    base = prefix_fingerprints(bars(10))
    edited = bars(10)
    edited.loc[4, "close"] = np.nextafter(edited.loc[4, "close"], np.inf)  # one ulp
    changed = prefix_fingerprints(edited)
    assert (changed[:4] == base[:4]).all() and (changed[4:] != base[4:]).all()
    # a prefix of the data has the same prefix fingerprints: appending never rewrites history
    assert (prefix_fingerprints(bars(6)) == base[:6]).all()
    assert series_fingerprint(bars(10)) != series_fingerprint(edited)
    assert series_fingerprint(bars(0)) == "0" * 16
    # -0.0 and 0.0 are different bits
    zero = bars(3).assign(volume_base=[0.0, 0.0, 0.0])
    assert (prefix_fingerprints(zero) != prefix_fingerprints(zero.assign(volume_base=-0.0))).all()


def test_feature_rows_round_trip_bit_for_bit(sessions: sessionmaker[Session]) -> None:
    values = np.array([[1.5, np.nan, -0.0], [np.pi, 1e-300, np.inf], [2.0, 3.0, 4.0]])
    rows = FeatureRows(np.array([0, 60, 120]), np.array([-5, 7, 2**62]), values)
    with transaction(sessions) as s:
        repo = FeatureRepository(s)
        repo.register_set("v1", "a,b,c", ["a", "b", "c"])
        assert repo.upsert("BTC", "1m", "v1", rows) == 3
    with sessions() as s:
        repo = FeatureRepository(s)
        back = repo.read("BTC", "1m", "v1")
        assert back.ts.tolist() == [0, 60, 120]
        assert back.fingerprints.tolist() == [-5, 7, 2**62]
        assert back.values.tobytes() == values.tobytes()  # NaN, -0.0 and inf bits intact
        assert repo.read("BTC", "1m", "v1", limit=2, newest_first=True).ts.tolist() == [60, 120]
        assert repo.latest_ts("BTC", "1m", "v1") == 120
        assert repo.get_set("v1") == ("a,b,c", ["a", "b", "c"])


def test_rewrite_replaces_and_versions_are_separate(sessions: sessionmaker[Session]) -> None:
    first = FeatureRows(np.array([0, 60]), np.array([1, 2]), np.ones((2, 2)))
    second = FeatureRows(np.array([60, 120]), np.array([3, 4]), np.full((2, 2), 7.0))
    with transaction(sessions) as s:
        repo = FeatureRepository(s)
        repo.upsert("BTC", "1m", "v1", first)
        repo.upsert("BTC", "1m", "v1", second)
        repo.upsert("BTC", "1m", "v2", first)
    with sessions() as s:
        back = FeatureRepository(s).read("BTC", "1m", "v1")
        assert back.ts.tolist() == [0, 60, 120] and back.fingerprints.tolist() == [1, 3, 4]
        assert back.values[:, 0].tolist() == [1.0, 7.0, 7.0]
        assert FeatureRepository(s).read("BTC", "1m", "v2").ts.tolist() == [0, 60]


def test_a_version_cannot_be_redefined(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        FeatureRepository(s).register_set("v1", "ema:20", ["ema_20"])
        FeatureRepository(s).register_set("v1", "ema:20", ["ema_20"])  # same: fine
    with pytest.raises(DataIntegrityError, match="new version"), transaction(sessions) as s:
        FeatureRepository(s).register_set("v1", "ema:50", ["ema_50"])


def test_two_writers_registering_one_set_both_succeed(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two series refreshing the same feature set at once (BTC:1d and ETH:1d): the late writer
    looked before the early one committed, and must neither fail nor redefine the set."""
    with transaction(sessions) as early:
        FeatureRepository(early).register_set("v1:1d", "sma:20", ["sma_20"])
    with transaction(sessions) as late:
        real_get = late.get
        looks: list[str] = []

        def looked_too_early(entity: object, key: object, **kw: object) -> object:
            looks.append(str(key))
            return None if len(looks) == 1 else real_get(entity, key, **kw)  # type: ignore[call-overload]

        monkeypatch.setattr(late, "get", looked_too_early)
        FeatureRepository(late).register_set("v1:1d", "sma:20", ["sma_20"])  # no IntegrityError
        monkeypatch.setattr(late, "get", real_get)
        with pytest.raises(DataIntegrityError, match="already exists"):
            FeatureRepository(late).register_set("v1:1d", "ema:20", ["ema_20"])
    with sessions() as s:
        assert s.query(FeatureSet).count() == 1
