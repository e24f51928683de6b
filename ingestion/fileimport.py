"""Parse candle CSV files (Binance klines, OHLCV exports, CryptoDataDownload) into candle frames.

Pure parsing, no database: the result is a ``storage.columns.CANDLE_COLUMNS`` frame plus an
account of what was read, dropped as a duplicate, or rejected and why. Real files are messy
(mixed epoch units in one column, newest-first order, pagination duplicates, partial bars,
still-open candles), so every row is validated on its own and a bad row never sinks the file.

Layouts (detected from the header names, or from the column count when there is no header):

* ``kline12``: data.binance.vision klines, ``open_time,open,high,low,close,volume,close_time,
  quote_volume,count,taker_buy_base,taker_buy_quote,ignore``.
* ``kline7``: the first seven kline columns (up to ``close_time``).
* ``ohlcv6``: ``timestamp,open,high,low,close,volume`` (volume in the base asset).
* ``cdd``: CryptoDataDownload, ``unix,date,symbol,open,high,low,close,Volume <BASE>,
  Volume <QUOTE>,tradecount``; time comes from ``unix``, ``date`` is ignored.

A file has a header iff the first field of its first line is neither a number nor an ISO date.
Timestamps are detected per row: ISO dates/datetimes (naive means UTC) or epoch numbers in
seconds, milliseconds or microseconds, told apart by magnitude.

Each row gets at most one rejection reason, the first failing check in this order:
unparseable, misaligned, non_positive_price, inconsistent_ohlc, negative_volume,
wrong_close_time, not_closed. Valid rows are then deduplicated on ``ts``: the last row in the
file wins, except that a higher-resolution timestamp wins over a lower one (CryptoDataDownload
mixes exchange-exact ms rows with rounded legacy float-seconds rows for the same bars).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from storage.columns import CANDLE_COLUMNS
from storage.intervals import INTERVAL_SECONDS, interval_seconds

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# Every reason a row can be rejected for (the checks run in the order the module doc gives).
REJECT_REASONS: Final[tuple[str, ...]] = (
    "unparseable",
    "misaligned",
    "inconsistent_ohlc",
    "non_positive_price",
    "negative_volume",
    "wrong_close_time",
    "not_closed",
)
MAX_EXAMPLES: Final = 20
_US: Final = 1_000_000
# Epoch magnitude bands (upper bounds) for seconds, ms, µs; the rank doubles as resolution.
_EPOCH_BOUNDS: Final = (1e11, 1e14, 1e17)
_TICK_US: Final = np.array([_US, 1_000, 1], dtype=np.int64)  # one unit of each rank, in µs
_MISSING_TOKENS: Final = frozenset({"", "null", "nan", "none", "na", "n/a"})
_ISO_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}([ T].*)?")
_QUOTES: Final = ("USDT", "USDC", "BUSD", "USD")
_INTERVAL_ALIASES: Final = {"d": "1d", "D": "1d", "1D": "1d", "daily": "1d", "minute": "1m"}


@dataclass(frozen=True)
class RejectedRow:
    """One rejected data row: where it is in the file, why it was rejected, and the values."""

    line: int  # 1-based physical line in the file (a header is line 1)
    reason: str  # one of REJECT_REASONS
    detail: str  # what is wrong, with the offending values


@dataclass
class ParseResult:
    """Valid candles plus an audit of the file, so an import can report what it skipped."""

    frame: pd.DataFrame  # CANDLE_COLUMNS, valid rows, one per ts, ts ascending, RangeIndex
    layout: str  # "kline12", "kline7", "ohlcv6" or "cdd"
    rows_read: int  # data rows in the file (header and blank lines excluded)
    duplicates: int  # valid rows dropped because a preferred row had the same ts
    rejected: dict[str, int]  # reason -> count, only reasons that occurred
    rejected_examples: list[RejectedRow]  # the first MAX_EXAMPLES rejected rows, file order


@dataclass(frozen=True)
class _Layout:
    """A column layout: header-name patterns per position and where each field lives."""

    name: str
    header: tuple[str | None, ...]  # regex on the normalised header name; None = unchecked
    fields: tuple[tuple[str, int], ...]  # canonical field -> column position
    example: str  # a header line, for error messages


_TIME = r"opentime|timestamp|time|date|datetime|ts|unix|unixtimestamp"
_OHLC = ("open", "high", "low", "close")
_KLINE7_HEADER = (_TIME, *_OHLC, "volume", "closetime")
_KLINE7_FIELDS = tuple(
    (name, pos) for pos, name in enumerate(("time", *_OHLC, "volume_base", "close_time"))
)
_CDD_NAMES = ("time", "", "", *_OHLC, "volume_base", "volume_quote", "trade_count")
_LAYOUTS: Final = (
    _Layout(
        "kline12",
        (*_KLINE7_HEADER, "quote(asset)?volume", "count|numberoftrades|trades", None, None, None),
        (*_KLINE7_FIELDS, ("volume_quote", 7), ("trade_count", 8)),
        "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
        "taker_buy_base,taker_buy_quote,ignore",
    ),
    _Layout(
        "kline7",
        _KLINE7_HEADER,
        _KLINE7_FIELDS,
        "open_time,open,high,low,close,volume,close_time",
    ),
    _Layout(
        "ohlcv6",
        _KLINE7_HEADER[:6],
        _KLINE7_FIELDS[:6],
        "timestamp,open,high,low,close,volume",
    ),
    _Layout(
        "cdd",
        ("unix|unixtimestamp", "date", "symbol", *_OHLC, r"volume\w+", r"volume\w+", "tradecount"),
        tuple((name, pos) for pos, name in enumerate(_CDD_NAMES) if name),
        "unix,date,symbol,open,high,low,close,Volume <BASE>,Volume <QUOTE>,tradecount",
    ),
)


def _unknown_layout(what: str) -> ValueError:
    accepted = "; ".join(
        f"{lay.name} ({len(lay.header)} columns: {lay.example})" for lay in _LAYOUTS
    )
    return ValueError(f"unrecognised candle file layout: {what}. Accepted layouts: {accepted}")


def _layout_from_header(names: list[str]) -> _Layout:
    """The layout whose header patterns match ``names`` (case, spaces, ``_`` ignored)."""
    norm = [re.sub(r"[^a-z0-9]", "", name.lower()) for name in names]
    for lay in _LAYOUTS:
        if len(lay.header) == len(norm) and all(
            pat is None or re.fullmatch(pat, name)
            for pat, name in zip(lay.header, norm, strict=True)
        ):
            return lay
    raise _unknown_layout(f"header {','.join(names)!r}")


def _layout_from_width(width: int) -> _Layout:
    """The layout for a headerless file with ``width`` columns."""
    for lay in _LAYOUTS:
        if len(lay.header) == width:
            return lay
    raise _unknown_layout(f"no header and {width} columns")


def _is_data_field(value: str) -> bool:
    """True when a first field is a number or ISO date, i.e. the line is data, not a header."""
    try:
        float(value)
    except ValueError:
        return _ISO_DATE.fullmatch(value) is not None
    return True


def _floats(raw: pd.Series) -> FloatArray:
    """Parse numbers; anything unparseable becomes NaN (callers decide if NaN is allowed)."""
    return pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _optional_floats(raw: pd.Series) -> tuple[FloatArray, BoolArray]:
    """Parse an optional column: blank/NULL/NaN become NaN; garbage and inf are flagged bad."""
    values = _floats(raw)
    missing = raw.isna().to_numpy() | raw.str.lower().isin(_MISSING_TOKENS).to_numpy()
    return np.where(missing, np.nan, values), ~missing & ~np.isfinite(values)


def _times(raw: pd.Series) -> tuple[IntArray, IntArray, BoolArray]:
    """Per-row timestamps as (µs since epoch, resolution rank 0=s/ISO 1=ms 2=µs, parsed ok)."""
    num = _floats(raw)
    numeric = np.isfinite(num)
    rank = np.searchsorted(np.array(_EPOCH_BOUNDS), np.where(numeric, num, 0.0), side="right")
    ok = numeric & (num >= 0) & (rank < len(_EPOCH_BOUNDS))
    rank = np.minimum(rank, len(_EPOCH_BOUNDS) - 1).astype(np.int64)
    scale = _TICK_US[rank].astype(np.float64)
    us = np.where(ok, np.rint(np.where(ok, num, 0.0) * scale), 0.0).astype(np.int64)
    text = ~numeric & raw.notna().to_numpy()
    if text.any():
        parsed = pd.to_datetime(raw[text], format="ISO8601", utc=True, errors="coerce")
        good = parsed.notna().to_numpy()
        iso_us = parsed.dt.as_unit("us").astype("int64").to_numpy()
        rows = np.flatnonzero(text)
        us[rows[good]] = iso_us[good]
        ok[rows[good]] = iso_us[good] >= 0
        rank[rows] = 0
    return us, rank, ok


@dataclass
class _Rows:
    """Parsed columns of every data row, kept together for validation and error details."""

    width: int  # fields per line in this layout
    raw: dict[str, pd.Series]
    bad: dict[str, BoolArray]  # field -> did not parse (in the order details report them)
    values: dict[str, FloatArray]
    ts_us: IntArray
    rank: IntArray
    close_us: IntArray | None
    close_rank: IntArray | None


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _detail(rows: _Rows, i: int, reason: str, *, iv: int, now: int, line: str) -> str:
    """A human-readable explanation of why row ``i`` was rejected, quoting its values."""
    v = {name: float(arr[i]) for name, arr in rows.values.items()}
    open_s = rows.ts_us[i] / _US
    if reason == "unparseable":
        field = next(name for name, bad in rows.bad.items() if bad[i])
        if field == "fields":
            return f"{line.count(',') + 1} fields, expected {rows.width}: {line[:120]!r}"
        kinds = {"time": "timestamp", "close_time": "timestamp", "trade_count": "whole number"}
        kind = kinds.get(field, "number")
        return f"{field}={rows.raw[field].iloc[i]!r} is not a valid {kind}"
    if reason == "misaligned":
        return f"open time {_utc(open_s)} ({open_s}s) is not a multiple of {iv}s"
    if reason == "non_positive_price":
        prices = " ".join(f"{k}={v[k]}" for k in _OHLC)
        return f"prices must be > 0: {prices}"
    if reason == "inconsistent_ohlc":
        return f"high={v['high']} low={v['low']} do not bracket open={v['open']} close={v['close']}"
    if reason == "negative_volume":
        vols = ("volume_base", "volume_quote", "trade_count")
        return "negative volume: " + " ".join(f"{k}={v[k]}" for k in vols if v[k] < 0)
    if reason == "wrong_close_time":
        assert rows.close_us is not None and rows.close_rank is not None
        tick = int(_TICK_US[rows.close_rank[i]])
        expected = (int(rows.ts_us[i]) + iv * _US) // tick - 1
        return (
            f"close_time={rows.raw['close_time'].iloc[i]} but a full {iv}s bar opening at "
            f"{_utc(open_s)} closes at {expected} (partial or misaligned bar)"
        )
    return f"bar {_utc(open_s)} closes at {_utc(open_s + iv)}, after now {_utc(now)}"


def _read_rows(body: pd.Series, lay: _Layout) -> _Rows:
    """Split lines into fields and parse every field the layout maps, all vectorised."""
    width = len(lay.header)
    parts = body.str.split(",", n=width, expand=True)  # n=width: an extra field shows up
    n_fields = parts.notna().sum(axis=1).to_numpy() if len(body) else np.zeros(0, np.int64)
    raw: dict[str, pd.Series] = {}
    for name, pos in lay.fields:
        col = parts[pos] if pos in parts.columns else pd.Series([None] * len(body), dtype="str")
        raw[name] = col.str.strip().str.strip("\"'")
    bad: dict[str, BoolArray] = {"fields": n_fields != width}
    ts_us, rank, bad["time"] = _times(raw["time"])
    bad["time"] = ~bad["time"]
    values: dict[str, FloatArray] = {}
    for name in ("open", "high", "low", "close", "volume_base"):
        values[name] = _floats(raw[name])
        bad[name] = ~np.isfinite(values[name])
    for name in ("volume_quote", "trade_count"):
        if name in raw:
            values[name], bad[name] = _optional_floats(raw[name])
        else:
            values[name] = np.full(len(body), np.nan)
    if "trade_count" in bad:  # a count is whole; storage rejects fractional counts too
        with np.errstate(invalid="ignore"):
            tc = values["trade_count"]
            bad["trade_count"] |= np.isfinite(tc) & (tc != np.floor(tc))
    close_us = close_rank = None
    if "close_time" in raw:
        close_us, close_rank, close_ok = _times(raw["close_time"])
        bad["close_time"] = ~close_ok
    return _Rows(width, raw, bad, values, ts_us, rank, close_us, close_rank)


def _reject_codes(rows: _Rows, iv: int, now: int) -> npt.NDArray[np.int8]:
    """Index into REJECT_REASONS of each row's first failing check, -1 for valid rows.

    A kline ``close_time`` must be ``open + interval - 1`` unit of its own resolution (1 ms, or
    1 µs in data.binance.vision's newer µs files); anything else is a partial or shifted bar.
    """
    v = rows.values
    o, h, lo, c = v["open"], v["high"], v["low"], v["close"]
    iv_us = iv * _US
    with np.errstate(invalid="ignore"):
        checks: list[tuple[str, BoolArray]] = [
            ("unparseable", np.logical_or.reduce(list(rows.bad.values()))),
            ("misaligned", rows.ts_us % iv_us != 0),
            ("non_positive_price", np.minimum.reduce([o, h, lo, c]) <= 0),
            (
                "inconsistent_ohlc",
                (h < np.maximum(o, c)) | (lo > np.minimum(o, c)) | (lo > h),
            ),
            (
                "negative_volume",
                (v["volume_base"] < 0) | (v["volume_quote"] < 0) | (v["trade_count"] < 0),
            ),
        ]
    if rows.close_us is not None and rows.close_rank is not None:
        expected = rows.ts_us + iv_us - _TICK_US[rows.close_rank]
        checks.append(("wrong_close_time", rows.close_us != expected))
    checks.append(("not_closed", rows.ts_us // _US + iv > now))
    codes = np.full(len(rows.ts_us), -1, dtype=np.int8)
    for reason, failed in checks:
        codes[(codes == -1) & failed] = REJECT_REASONS.index(reason)
    return codes


def parse_candle_text(
    text: str, *, coin: str, interval: str, now_s: int | None = None, source: str | None = None
) -> ParseResult:
    """Parse CSV ``text`` holding ``coin``/``interval`` candles; see the module docstring.

    ``now_s`` (default: the current time) decides which bars are still open: a bar whose close
    time ``ts + interval`` lies after it is rejected as ``not_closed``. ``source`` defaults to
    ``file:<layout>``. Raises ``ValueError`` for an unknown interval or layout or an empty text.
    """
    iv = interval_seconds(interval)
    base = coin.strip().upper()
    if not base:
        raise ValueError("coin must be a non-empty base-asset symbol such as 'BTC'")
    now = int(time.time()) if now_s is None else int(now_s)

    lines = pd.Series(text.removeprefix("\ufeff").splitlines(), dtype="str")  # arrow-backed
    content = lines.str.strip().ne("").to_numpy(dtype=bool)
    line_no = np.flatnonzero(content) + 1
    lines = lines[content].reset_index(drop=True)
    if len(lines) and str(lines.iloc[0]).lstrip().lower().startswith("http"):
        lines, line_no = lines.iloc[1:].reset_index(drop=True), line_no[1:]  # CDD banner
    if not len(lines):
        raise _unknown_layout("the text has no header and no data rows")
    first = [f.strip().strip("\"'") for f in str(lines.iloc[0]).split(",")]
    if _is_data_field(first[0]):
        lay = _layout_from_width(len(first))
    else:
        lay = _layout_from_header(first)
        lines, line_no = lines.iloc[1:].reset_index(drop=True), line_no[1:]

    rows = _read_rows(lines, lay)
    codes = _reject_codes(rows, iv, now)
    counts = np.bincount(codes[codes >= 0], minlength=len(REJECT_REASONS))
    rejected = {r: int(k) for r, k in zip(REJECT_REASONS, counts, strict=True) if k}
    examples = [
        RejectedRow(
            int(line_no[i]),
            REJECT_REASONS[codes[i]],
            _detail(
                rows, int(i), REJECT_REASONS[codes[i]], iv=iv, now=now, line=str(lines.iloc[i])
            ),
        )
        for i in np.flatnonzero(codes >= 0)[:MAX_EXAMPLES]
    ]

    # Keep the last row per ts after sorting by (ts, resolution, file position): a later row
    # wins, except that a higher-resolution timestamp (exchange-exact ms) beats legacy seconds.
    valid = np.flatnonzero(codes == -1)
    ts = rows.ts_us[valid] // _US
    order = np.lexsort((valid, rows.rank[valid], ts))
    sorted_ts = ts[order]
    keep_sorted = np.append(sorted_ts[1:] != sorted_ts[:-1], True)[: len(order)]
    chosen = valid[order[keep_sorted]]
    n = len(chosen)
    frame = pd.DataFrame(
        {
            "coin": pd.Series([base] * n, dtype="str"),
            "interval": pd.Series([interval] * n, dtype="str"),
            "ts": rows.ts_us[chosen] // _US,
            **{name: rows.values[name][chosen] for name in CANDLE_COLUMNS[3:-1]},
            "source": pd.Series([source or f"file:{lay.name}"] * n, dtype="str"),
        }
    )
    return ParseResult(
        frame=frame.loc[:, list(CANDLE_COLUMNS)],
        layout=lay.name,
        rows_read=len(lines),
        duplicates=len(valid) - n,
        rejected=rejected,
        rejected_examples=examples,
    )


def parse_candle_file(
    path: str | os.PathLike[str],
    *,
    coin: str,
    interval: str,
    now_s: int | None = None,
    source: str | None = None,
) -> ParseResult:
    """Parse the candle CSV at ``path`` (UTF-8, BOM and CRLF tolerated); see parse_candle_text."""
    text = Path(path).read_text(encoding="utf-8-sig")
    return parse_candle_text(text, coin=coin, interval=interval, now_s=now_s, source=source)


def infer_coin_interval(path: str | os.PathLike[str]) -> tuple[str | None, str | None]:
    """Guess (base coin, interval) from a file name such as ``binance_spot_BTCUSDT_4h_2017.csv``.

    Tokens are split on ``_``, ``-`` and ``.``; the first token ending in a quote asset
    (USDT, USDC, BUSD, USD) gives the base coin, the first interval name (or CDD's ``d`` for
    daily, ``minute``) gives the interval. Either is None when the name does not say.
    """
    coin: str | None = None
    interval: str | None = None
    for token in re.split(r"[_\-.\s]+", Path(path).name):
        if interval is None and (token in INTERVAL_SECONDS or token in _INTERVAL_ALIASES):
            interval = _INTERVAL_ALIASES.get(token, token)
        upper = token.upper()
        if coin is None and upper.isalnum() and not upper.isdigit():
            quote = next((q for q in _QUOTES if upper.endswith(q) and len(upper) > len(q)), None)
            if quote is not None:
                coin = upper[: -len(quote)]
    return coin, interval
