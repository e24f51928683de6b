"""Progress of the long CLI commands: a rich bar on a terminal, one stderr line per step
otherwise (at most one a second, always the last), nothing with --quiet; stdout unchanged.

Counts asserted are worked out by hand from the request (bars in a range, 1,000-bar pages)
or read from the real files with pandas.
"""

from __future__ import annotations

import io
import math
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from serve_app.cli import main
from serve_app.progress_cli import Steps, follow_run
from serve_app.services.runs import start_run
from serve_app.settings import Settings
from storage.engine import make_engine, session_factory, transaction
from storage.migrate import upgrade
from storage.runs import RunRepository

LINE = re.compile(r"^\[(\d+)(?:/(\d+))? ([a-z ]*)\] (.*)$")


def lines(err: str, strict: bool = True) -> list[tuple[int, int | None, str, str]]:
    """The progress lines of stderr (``strict``: nothing else may be there)."""
    out = []
    for text in err.splitlines():
        m = LINE.match(text)
        if m is None:
            assert not strict, f"not a progress line: {text!r}"
            continue
        out.append((int(m[1]), None if m[2] is None else int(m[2]), m[3].strip(), m[4]))
    return out


def test_lines_off_a_terminal_at_most_one_a_second_and_always_the_last(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with Steps("work", total=1000, unit="items") as steps:
        for i in range(1, 1001):
            steps.update(i, info=f"item {i}")
    got = lines(capsys.readouterr().err)
    assert got[0] == (1, 1000, "items", "work item 1")
    assert got[-1] == (1000, 1000, "items", "work item 1000")
    assert len(got) <= 3  # a few milliseconds of work: the first and the last line
    with Steps("quiet", total=3, unit="files", quiet=True) as steps:
        steps.advance(3)
    assert capsys.readouterr() == ("", "")


def test_a_bar_on_a_terminal() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100)
    with Steps("import", total=4, unit="files", console=console) as steps:
        for _ in range(4):
            steps.advance(1, info="x.csv: 10 rows")
    shown = buffer.getvalue()
    assert "import" in shown and "4/4" in shown and "x.csv: 10 rows" in shown
    assert "\x1b[" in shown  # drawn with terminal control codes, not lines


@pytest.mark.realdata
def test_import_of_several_files_prints_one_line_per_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, shared_data: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'squall.db'}"
    names = ["binance_spot_BTCUSDT_1d_2017-2026.csv", "binance_spot_ETHUSDT_1d_2017-2026.csv"]
    files = [str(shared_data / n) for n in names]
    assert main(["import", *files], settings=Settings(database_url=url)) == 0
    out, err = capsys.readouterr()
    rows = [len(pd.read_csv(f)) for f in files]
    assert lines(err) == [
        (1, 2, "files", f"import {names[0]}: {rows[0]} rows, {rows[0]} inserted"),
        (2, 2, "files", f"import {names[1]}: {rows[1]} rows, {rows[1]} inserted"),
    ]
    assert [f"read {n}, inserted {n}," in out for n in rows] == [True, True]
    assert main(["import", *files, "--quiet"], settings=Settings(database_url=url)) == 0
    assert capsys.readouterr().err == ""


def _day(offset: int) -> str:
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (day + timedelta(days=offset)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_backfill_counts_pages_and_bars(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'squall.db'}"
    start, end = _day(-100), _day(-10)
    argv = ["backfill", "--coin", "BTC", "--interval", "1h", "--start", start, "--end", end]
    assert main(argv, settings=Settings(database_url=url)) == 0
    out, err = capsys.readouterr()
    bars = 90 * 24 + 1  # hourly bars from start to end, both included
    pages = math.ceil(bars / 1000)  # the backfill fetches 1,000-bar pages
    got = lines(err)
    added = int(re.search(r"candles_added (\d+)", out)[1])  # type: ignore[index]
    # the synthetic market has outages of its own: fewer bars than asked came back
    assert got[-1] == (bars, bars, "bars", f"backfill BTC 1h: {pages} pages, {added} bars")
    assert [d for d, *_ in got] == sorted(d for d, *_ in got) and 0 < added <= bars


def test_sweep_status_follow_polls_the_registry_until_done(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'squall.db'}"
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    run_id, _ = start_run(
        sessions, "sweep", {"spec": "t"}, progress={"done": 0, "total": 6, "unit": "sets"}
    )

    def work() -> None:
        for done in range(1, 7):
            time.sleep(0.4)
            with transaction(sessions) as session:
                RunRepository(session).update(
                    run_id, progress={"done": done, "total": 6, "unit": "sets"}
                )
        with transaction(sessions) as session:
            RunRepository(session).update(run_id, status="succeeded")

    worker = threading.Thread(target=work)
    worker.start()
    try:
        code = main(["sweep", "status", run_id, "--follow"], settings=Settings(database_url=url))
    finally:
        worker.join()
        engine.dispose()
    out, err = capsys.readouterr()
    got = lines(err)
    assert code == 0 and got[-1][:2] == (6, 6) and got[-1][3].endswith("succeeded")
    assert [d for d, *_ in got] == sorted(d for d, *_ in got)
    assert f"sweep {run_id}" in out and "6/6 parameter sets" in out


def test_follow_run_stops_on_failure_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    states = iter(
        [
            {"status": "running", "progress": {"done": 1, "total": 4, "unit": "folds"}},
            {"status": "failed", "progress": {"done": 2, "total": 4, "unit": "folds"}},
        ]
    )
    last = follow_run(lambda: next(states), "walk", every_s=0.01)
    assert last["status"] == "failed"
    assert lines(capsys.readouterr().err)[-1] == (2, 4, "folds", "walk failed")


@pytest.mark.ray
@pytest.mark.realdata
def test_features_build_reports_blocks(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, shared_data: Path
) -> None:
    ray = pytest.importorskip("ray")
    url = f"sqlite:///{tmp_path / 'squall.db'}"
    settings = Settings(database_url=url, coins=["BTC"], intervals=["4h"])
    path = shared_data / "binance_spot_BTCUSDT_4h_2017-2026.csv"
    assert main(["import", str(path), "--quiet"], settings=settings) == 0
    capsys.readouterr()
    try:
        assert main(["features", "build", "--full"], settings=settings) == 0
    finally:
        ray.shutdown()
    out, err = capsys.readouterr()
    raw = pd.read_csv(path)
    ts = (pd.to_datetime(raw["timestamp"], utc=True) - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    # features are computed in blocks of 2,048 bars aligned on the epoch's 4h grid
    first, last = (int(t) // 14_400 // 2048 for t in (ts.iloc[0], ts.iloc[-1]))
    blocks = last - first + 1
    got = [g for g in lines(err, strict=False) if g[2] == "blocks"]  # Ray logs there too
    assert got[-1][:2] == (blocks, blocks) and got[-1][3] == "features build"
    assert "feature rows written: 18371" in out
