"""The run registry on both databases: round trip, exact floats, compression, filters, pages."""

from __future__ import annotations

import zlib

import numpy as np
import orjson
import pytest
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from storage.engine import transaction
from storage.errors import ConfigurationError
from storage.models import BacktestRun
from storage.runs import (
    COMPRESS_ABOVE,
    RunFilter,
    RunNotFoundError,
    RunRepository,
    decode_blob,
    encode_blob,
)


def _add(session: Session, **overrides: object) -> str:
    fields: dict[str, object] = {
        "kind": "backtest",
        "request": {"coin": "BTC", "params": {"fast": 5}},
        "request_hash": "ab" * 32,
        "code_version": "test",
    }
    fields.update(overrides)
    return RunRepository(session).add(**fields)  # type: ignore[arg-type]


def test_round_trip_keeps_every_field_and_exact_floats(
    sessions: sessionmaker[Session],
) -> None:
    rng = np.random.default_rng(3)
    equity = {"ts": np.arange(5000, dtype=np.int64) * 60, "equity": rng.normal(1, 0.1, 5000)}
    trades = [{"entry_ts": 60, "pnl": 0.1 + 0.2, "side": "long"}]
    with transaction(sessions) as s:
        run_id = _add(
            s,
            seed=42,
            coin="BTC",
            interval="1m",
            strategy="ema_cross",
            data_fingerprint="0123456789abcdef",
            summary={"sharpe": 1.0 / 3.0, "trades": 7, "max_dd": None},
            progress={"done": 1, "total": 1},
            equity=equity,
            trades=trades,
            results={"folds": []},
            status="succeeded",
            duration_s=0.5,
            created_at=1_700_000_000,
        )
    with sessions() as s:
        got = RunRepository(s).get(run_id)
        raw = s.get(BacktestRun, run_id)
        assert raw is not None and raw.equity is not None
        stored_equity_bytes = len(raw.equity)
    assert got is not None and got.payload_loaded
    assert (got.kind, got.status, got.seed, got.coin, got.interval) == (
        "backtest",
        "succeeded",
        42,
        "BTC",
        "1m",
    )
    assert got.created_at == 1_700_000_000
    assert got.request == {"coin": "BTC", "params": {"fast": 5}}
    assert got.summary == {"sharpe": 1.0 / 3.0, "trades": 7, "max_dd": None}
    assert got.progress == {"done": 1, "total": 1}
    # bit-for-bit floats after the JSON + zlib round trip
    assert np.array_equal(np.asarray(got.equity["equity"]), equity["equity"])
    assert got.equity["ts"] == equity["ts"].tolist()
    assert got.trades == trades and got.trades[0]["pnl"] == 0.1 + 0.2
    assert got.results == {"folds": []}
    plain = len(orjson.dumps(equity, option=orjson.OPT_SERIALIZE_NUMPY))
    assert stored_equity_bytes < plain / 2  # large blobs are compressed


def test_blob_encoding_is_plain_when_small_and_zlib_when_large() -> None:
    small = {"a": [1.5, 2.5]}
    assert encode_blob(small)[:1] == b"J"
    assert decode_blob(encode_blob(small)) == small
    large = {"x": list(range(COMPRESS_ABOVE))}
    blob = encode_blob(large)
    assert blob[:1] == b"Z"
    assert orjson.loads(zlib.decompress(blob[1:])) == large  # a standard zlib stream
    assert decode_blob(blob) == large
    assert decode_blob(None) is None
    with pytest.raises(ValueError, match="encoding"):
        decode_blob(b"Qxx")


def test_update_and_missing_run(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        run_id = _add(s)
        RunRepository(s).update(
            run_id, status="running", progress={"done": 3, "total": 10}, job_id="raysubmit_1"
        )
    with transaction(sessions) as s:
        repo = RunRepository(s)
        run = repo.get(run_id, payload=False)
        assert run is not None
        assert (run.status, run.progress, run.job_id) == (
            "running",
            {"done": 3, "total": 10},
            "raysubmit_1",
        )
        assert not run.payload_loaded and run.equity is None
        found = repo.find_by_job("raysubmit_1")
        assert found is not None and found.id == run_id
        assert repo.find_by_job("nope") is None
        with pytest.raises(RunNotFoundError):
            repo.update("no-such-run", status="failed")
        with pytest.raises(TypeError, match="unknown run fields"):
            repo.update(run_id, colour="red")
        with pytest.raises(ConfigurationError, match="status"):
            repo.update(run_id, status="exploded")
        assert repo.get("no-such-run") is None


def test_filters_pagination_and_newest_first(sessions: sessionmaker[Session]) -> None:
    ids = []
    with transaction(sessions) as s:
        for i in range(7):
            ids.append(
                _add(
                    s,
                    kind="sweep" if i % 3 == 0 else "backtest",
                    coin="ETH" if i % 2 else "BTC",
                    strategy="ema_cross" if i < 4 else "rsi",
                    created_at=1_700_000_000 + i * 86_400,
                )
            )
    with sessions() as s:
        repo = RunRepository(s)
        everything = repo.list(limit=100)
        assert [r.id for r in everything] == ids[::-1]
        assert all(not r.payload_loaded for r in everything)
        page1 = repo.list(limit=3, offset=0)
        page2 = repo.list(limit=3, offset=3)
        page3 = repo.list(limit=3, offset=6)
        assert [r.id for r in page1 + page2 + page3] == ids[::-1]
        sweeps = RunFilter(kind="sweep")
        assert {r.id for r in repo.list(sweeps)} == {ids[0], ids[3], ids[6]}
        assert repo.count(sweeps) == 3
        eth_ema = RunFilter(coin="ETH", strategy="ema_cross")
        assert {r.id for r in repo.list(eth_ema)} == {ids[1], ids[3]}
        window = RunFilter(
            created_from=1_700_000_000 + 86_400, created_to=1_700_000_000 + 3 * 86_400
        )
        assert {r.id for r in repo.list(window)} == set(ids[1:4])
        assert repo.count() == 7
        with pytest.raises(ConfigurationError, match="limit"):
            repo.list(limit=0)
        with pytest.raises(ConfigurationError, match="offset"):
            repo.list(offset=-1)


def test_database_enforces_kind_and_status(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(ConfigurationError, match="kind"), transaction(sessions) as s:
        _add(s, kind="magic")
    # the CHECK constraints hold even when the repository is bypassed
    with pytest.raises(IntegrityError), transaction(sessions) as s:
        s.add(
            BacktestRun(
                id="x",
                kind="magic",
                status="queued",
                created_at=0,
                request="{}",
                request_hash="h",
                code_version="v",
            )
        )
        s.flush()
    with sessions() as s:
        assert s.scalars(select(BacktestRun)).all() == []


def test_indexes_exist(sessions: sessionmaker[Session]) -> None:
    bind = sessions.kw["bind"]
    names = {i["name"] for i in inspect(bind).get_indexes("backtest_runs")}
    assert {
        "ix_backtest_runs_created_at",
        "ix_backtest_runs_kind_created_at",
        "ix_backtest_runs_coin_strategy",
        "ix_backtest_runs_job_id",
    } <= names


def test_lifecycle_beats_cancel_claim_and_the_reaper(sessions: sessionmaker[Session]) -> None:
    """A running run beats; a stale one is failed with the reason; a queued one waits up to
    the queue timeout; cancel and claim follow the states."""
    t0 = 1_800_000_000

    def add(status: str, created: int, beat: int | None) -> str:
        with transaction(sessions) as s:
            return RunRepository(s).add(
                "simulation", {"x": 1}, request_hash="h", code_version="v", status=status,
                created_at=created, heartbeat_at=beat,
            )  # fmt: skip

    fresh = add("running", t0, t0 + 95)
    stale = add("running", t0, t0 + 50)
    waiting = add("queued", t0 + 60, t0 + 60)
    old_queued = add("queued", t0 - 7200, t0 - 7200)
    done = add("succeeded", t0 - 9000, t0 - 9000)
    with transaction(sessions) as s:
        repo = RunRepository(s)
        assert repo.beat(fresh, t0 + 100, {"done": 3, "total": 9}) is False
        failed = repo.fail_stale(t0 + 100, timeout_s=30, queued_timeout_s=3600)
    assert sorted(failed) == sorted([stale, old_queued])
    with sessions() as s:
        repo = RunRepository(s)
        got = {i: repo.get(i, payload=False) for i in (fresh, stale, waiting, old_queued, done)}
    assert got[fresh].status == "running" and got[fresh].progress == {"done": 3, "total": 9}
    assert got[fresh].heartbeat_at == t0 + 100
    assert got[stale].status == "failed" and "no heartbeat" in (got[stale].error or "")
    assert got[waiting].status == "queued" and got[done].status == "succeeded"
    with transaction(sessions) as s:
        repo = RunRepository(s)
        assert repo.request_cancel(fresh, t0 + 101) == "running"  # flagged, still running
        assert repo.beat(fresh, t0 + 102) is True  # the executor sees the flag
        assert repo.request_cancel(waiting, t0 + 101) == "cancelled"  # queued: at once
        assert repo.claim(waiting, t0 + 103, "w") is False  # nobody starts a cancelled run
    with sessions() as s:
        assert RunRepository(s).get(waiting, payload=False).status == "cancelled"
