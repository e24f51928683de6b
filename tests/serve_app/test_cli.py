"""``squall import`` / ``squall gaps`` / ``squall db`` end to end, on SQLite and Postgres.

Figures asserted here come from ``../shared/data/SOURCES.md`` (rows, duplicates, missing bars
and their runs), not from the code.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from serve_app.cli import main
from serve_app.settings import Settings
from storage.engine import make_engine, session_factory
from storage.models import Candle


def run(capsys: pytest.CaptureFixture[str], database_url: str, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv), settings=Settings(database_url=database_url))
    out, err = capsys.readouterr()
    return code, out, err


def stored(database_url: str, coin: str, interval: str) -> int:
    engine = make_engine(database_url)
    try:
        with session_factory(engine)() as s:
            return int(
                s.scalar(
                    select(func.count())
                    .select_from(Candle)
                    .where(Candle.coin == coin, Candle.interval == interval)
                )
                or 0
            )
    finally:
        engine.dispose()


@pytest.mark.realdata
def test_import_4h_file_twice_and_gap_report(
    capsys: pytest.CaptureFixture[str], database_url: str, shared_data: Path
) -> None:
    path = shared_data / "binance_spot_BTCUSDT_4h_2017-2026.csv"
    code, out, _ = run(capsys, database_url, "import", str(path), "--json")
    assert code == 0
    (report,) = json.loads(out)
    assert (report["coin"], report["interval"], report["layout"]) == ("BTC", "4h", "ohlcv6")
    assert report["rows_read"] == 18371
    assert (report["inserted"], report["updated"], report["unchanged"]) == (18371, 0, 0)
    assert report["duplicates"] == 0 and report["rejected"] == 0
    assert stored(database_url, "BTC", "4h") == 18371

    code, out, _ = run(capsys, database_url, "import", str(path), "--json")
    (again,) = json.loads(out)
    assert (again["inserted"], again["updated"], again["unchanged"]) == (0, 0, 18371)

    code, out, _ = run(capsys, database_url, "gaps", "--coin", "btc", "--interval", "4h", "--json")
    assert code == 0
    (series,) = json.loads(out)
    assert series["missing"] == 16 and len(series["gaps"]) == 8
    assert series["present"] == 18371 and series["expected"] == 18371 + 16
    # SOURCES.md: the exchange was down between the 2018-02-08 00:00 and 2018-02-09 08:00 bars
    outage = max(series["gaps"], key=lambda g: g["missing"])
    assert (outage["start_iso"], outage["end_iso"], outage["missing"]) == (
        "2018-02-08T04:00:00Z",
        "2018-02-09T04:00:00Z",
        7,
    )


@pytest.mark.realdata
def test_import_messy_files(
    capsys: pytest.CaptureFixture[str], database_url: str, shared_data: Path
) -> None:
    minute = shared_data / "binance_spot_BTCUSDT_1m_2024-03.csv"
    cdd = shared_data / "cdd_binance_ETHUSDT_1h.csv"
    code, out, _ = run(capsys, database_url, "import", str(minute), str(cdd), "--json")
    assert code == 0
    by_file = {Path(r["file"]).name: r for r in json.loads(out)}
    m = by_file[minute.name]
    # 30954 rows, 54 duplicate timestamps, 30900 unique
    assert (m["rows_read"], m["duplicates"], m["inserted"]) == (30954, 54, 30900)
    c = by_file[cdd.name]
    # newest-first, mixed ms/s epochs: 36062 raw rows, 33413 unique timestamps
    assert (c["coin"], c["interval"], c["layout"]) == ("ETH", "1h", "cdd")
    assert (c["rows_read"], c["inserted"]) == (36062, 33413)
    assert stored(database_url, "ETH", "1h") == 33413

    code, out, _ = run(capsys, database_url, "gaps", "--json")
    series = {(r["coin"], r["interval"]): r for r in json.loads(out)}
    assert series[("BTC", "1m")]["missing"] == 0
    assert series[("ETH", "1h")]["missing"] == 16


def test_import_reports_rejections_and_strict_writes_nothing(
    capsys: pytest.CaptureFixture[str], database_url: str, tmp_path: Path
) -> None:
    csv = tmp_path / "bars.csv"
    csv.write_text(
        "timestamp,open,high,low,close,volume\n"
        "2024-01-01 00:00:00,100,101,99,100.5,3\n"
        "2024-01-01 01:00:00,100,99,98,100.5,3\n"  # high below open: inconsistent
        "2024-01-01 02:30:00,100,101,99,100.5,3\n"  # not on the 1h grid: misaligned
        "2024-01-01 03:00:00,100,101,99,100.5,3\n"
    )
    code, out, _ = run(
        capsys, database_url, "import", str(csv), "--coin", "BTC", "--interval", "1h", "--strict"
    )
    assert code == 1 and "aborted" in out
    assert "line 3: inconsistent_ohlc" in out and "line 4: misaligned" in out
    assert stored(database_url, "BTC", "1h") == 0

    code, out, _ = run(
        capsys, database_url, "import", str(csv), "--coin", "BTC", "--interval", "1h", "--json"
    )
    (report,) = json.loads(out)
    assert code == 0 and report["inserted"] == 2
    assert report["rejected_by_reason"] == {"inconsistent_ohlc": 1, "misaligned": 1}
    assert stored(database_url, "BTC", "1h") == 2


def test_import_without_coin_for_an_anonymous_file_says_what_to_pass(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    csv = tmp_path / "x.csv"
    csv.write_text("timestamp,open,high,low,close,volume\n")
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    with pytest.raises(SystemExit, match="pass --coin and --interval"):
        run(capsys, url, "import", str(csv))


def test_db_commands(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    code, out, _ = run(capsys, url, "db", "current")
    assert code == 0 and "revision none" in out
    code, out, _ = run(capsys, url, "db", "upgrade")
    assert code == 0 and "(at head)" in out
    code, out, _ = run(capsys, url, "db", "downgrade", "base")
    assert "revision none" in out


# ------------------------------------------------------------------ one source per series
def day(offset: int) -> str:
    """The UTC date ``offset`` days from today (the synthetic market serves recent days)."""
    return datetime.fromtimestamp((time.time() // 86400 + offset) * 86400, UTC).strftime("%Y-%m-%d")


def all_rows(database_url: str, coin: str, interval: str) -> list[tuple[object, ...]]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            return [
                tuple(r)
                for r in conn.execute(
                    text(
                        "SELECT ts, open, high, low, close, volume_base, source, ingested_at "
                        'FROM candles WHERE coin = :c AND "interval" = :i ORDER BY ts'
                    ),
                    {"c": coin, "i": interval},
                )
            ]
    finally:
        engine.dispose()


def test_import_into_a_synthetic_series_is_refused_then_replaced_on_request(
    capsys: pytest.CaptureFixture[str], database_url: str, tmp_path: Path
) -> None:
    code, out, _ = run(
        capsys, database_url, "backfill", "--coin", "BTC", "--interval", "1d",
        "--start", day(-60), "--end", day(-5),
    )  # fmt: skip
    assert code == 0 and "candles_added 56" in out
    before = all_rows(database_url, "BTC", "1d")
    real = tmp_path / "btc_real.csv"
    real.write_text(
        "timestamp,open,high,low,close,volume\n"
        f"{day(-30)},114048.94,118649.1,113966.67,118594.99,20036.39516\n"
        f"{day(-29)},118594.99,121022.07,118279.31,120529.35,19670.83503\n"
    )
    imp = ("import", str(real), "--coin", "BTC", "--interval", "1d")
    code, out, err = run(capsys, database_url, *imp)
    assert code == 1 and "refused: nothing written" in out
    assert err.startswith(
        f"squall: {real}: BTC 1d belongs to source 'synthetic' (56 rows, {day(-60)}T00:00:00Z "
        f".. {day(-5)}T00:00:00Z); refusing to write 2 rows of source 'file' (file:ohlcv6)"
    )
    assert "SYN-BTC" in err and "--replace-source" in err and err.count("squall:") == 1
    assert all_rows(database_url, "BTC", "1d") == before

    code, out, err = run(capsys, database_url, *imp, "--replace-source")
    assert code == 0 and err == ""
    assert (
        f"--replace-source: series source synthetic -> file; {day(-30)}T00:00:00Z .. "
        f"{day(-29)}T00:00:00Z: 2 rows rewritten, 0 removed (2 changed); 54 rows of other "
        "sources remain outside that range"
    ) in out
    after = all_rows(database_url, "BTC", "1d")
    changed = [a for a, b in zip(after, before, strict=True) if a != b]
    assert [(r[1], r[6]) for r in changed] == [
        (114048.94, "file:ohlcv6"),
        (118594.99, "file:ohlcv6"),
    ]
    code, out, err = run(capsys, database_url, *imp, "--json")  # again: idempotent
    (report,) = json.loads(out)
    assert code == 0 and (report["unchanged"], report["source"]) == (2, "file")


@pytest.mark.realdata
def test_gaps_fix_with_the_synthetic_source_leaves_a_real_series_alone(
    capsys: pytest.CaptureFixture[str], database_url: str, shared_data: Path
) -> None:
    path = shared_data / "binance_spot_BTCUSDT_4h_2017-2026.csv"
    assert run(capsys, database_url, "import", str(path))[0] == 0
    code, out, err = run(capsys, database_url, "gaps", "--fix", "--json")
    assert code == 1
    assert err.startswith("squall: BTC 4h belongs to source 'file' (18371 rows,")
    (refused,) = json.loads(out)
    assert (refused["coin"], refused["interval"]) == ("BTC", "4h")
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:  # no 2018-2020 hole became an "exchange outage"
            assert conn.execute(text("SELECT count(*) FROM known_gaps")).scalar_one() == 0
    finally:
        engine.dispose()
    assert stored(database_url, "BTC", "4h") == 18371
