"""The backtest report, from a run-registry record (``storage.runs.RunRecord`` as a dict).

What it reads: ``summary`` (the engine's metrics), ``equity`` (``ts``, ``equity``,
``drawdown``, ``position``; thinned by ``stride`` when the run had more than 100k bars),
``trades``, ``results.used`` and ``results.regime_stats``, plus ``request`` and the run's
identity. The registry keeps no prices, so the caller passes the run's closes (``prices``:
``{"ts": [...], "close": [...]}``, unix seconds) for the buy-and-hold curve and the price
chart; without them those two are left out and the page says so.

Buy-and-hold is ``initial capital x close / first close`` at the equity curve's times (no
costs, no funding).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from serve_app.reports import charts as ch
from serve_app.reports import page as pg
from serve_app.reports import series as sr
from serve_app.reports.common import (
    drawdown_chart,
    equity_chart,
    log_range,
    metric_rows,
    monthly_section,
    rolling_section,
)

MAX_TRADE_MARKERS = 5_000  # beyond this, the most recent trades are marked
TRADE_ROWS = 50


def _records(record: Mapping[str, Any]) -> tuple[dict, dict, list, dict]:
    summary = dict(record.get("summary") or {})
    equity = dict(record.get("equity") or {})
    trades = list(record.get("trades") or [])
    results = dict(record.get("results") or {})
    if not equity.get("ts") or not equity.get("equity"):
        raise ValueError(
            f"run {record.get('id')!r} has no equity curve (status {record.get('status')!r}); "
            "a report needs a succeeded backtest run with its payload loaded"
        )
    return summary, equity, trades, results


def build_backtest(record: Mapping[str, Any], prices: Mapping[str, Any] | None = None) -> pg.Report:
    """The backtest report of ``record`` (module docstring)."""
    if record.get("kind", "backtest") != "backtest":
        raise ValueError(f"run {record.get('id')!r} is a {record.get('kind')}, not a backtest")
    summary, equity, trades, results = _records(record)
    used = dict(results.get("used") or {})
    ts = np.asarray(equity["ts"], np.int64)
    eq = sr.as_float(equity["equity"])
    dd = sr.as_float(equity["drawdown"]) if equity.get("drawdown") else sr.drawdown(eq)
    stride = int(equity.get("stride") or 1)
    ppy = float(used.get("periods_per_year") or summary.get("periods_per_year") or 365.0)
    capital = float(summary.get("initial_capital") or eq[0])
    coin = str(record.get("coin") or used.get("coin") or "?")
    interval = str(record.get("interval") or used.get("interval") or "?")
    strategy = str(record.get("strategy") or used.get("strategy") or "?")

    price_ts = np.asarray((prices or {}).get("ts") or [], np.int64)
    close = sr.as_float((prices or {}).get("close"))
    bench = sr.buy_and_hold(ts, price_ts, close, capital) if price_ts.size else None

    report = pg.Report(
        kind="backtest",
        title=f"Backtest {strategy} on {coin} {interval}",
        subtitle=f"{pg.utc(ts[0])} → {pg.utc(ts[-1])} · run {record.get('id', '?')}",
    )
    params = used.get("params") or (record.get("request") or {}).get("params") or {}
    report.meta = _meta(record, used, params, stride)

    sections: list[pg.Section] = [pg.Section("Summary", [_tiles(summary)], id="summary")]
    eq_blocks: list[pg.Block] = []
    eq_blocks += equity_chart(
        report, ts, eq, bench, dd_for_points=dd, label="strategy", title="Equity"
    )
    if bench is None:
        eq_blocks.append(
            pg.Note("Buy-and-hold is not shown: the report was made without the run's prices.")
        )
    eq_blocks += drawdown_chart(
        report, ts, dd, summary.get("max_drawdown"), summary.get("max_drawdown_trough_ts")
    )
    sections.append(pg.Section("Equity and drawdown", eq_blocks, id="equity"))
    sections.append(pg.Section("Trades on price", _price_blocks(report, trades, price_ts, close)))
    sections.append(monthly_section(report, ts, eq, base=float(eq[0])))
    sections.append(rolling_section(report, ts[1:], sr.returns_of(eq), ppy / stride, stride))
    sections.append(
        pg.Section(
            "Metrics",
            [
                pg.Table(
                    "metrics",
                    ["metric", "value"],
                    metric_rows(summary),
                    caption="the engine's metrics (docs/backtesting.md); drawdowns anchored "
                    "at the starting capital",
                )
            ],
        )
    )
    sections.append(_regime_section(results.get("regime_stats") or []))
    sections.append(_trades_section(trades))
    report.sections = sections
    return report


def _meta(
    record: Mapping[str, Any], used: Mapping[str, Any], params: Mapping[str, Any], stride: int
) -> list[tuple[str, str]]:
    data = used.get("data") or {}
    req = record.get("request") or {}
    out = [
        ("parameters", ", ".join(f"{k}={v}" for k, v in params.items()) or "—"),
        ("fees", f"{req.get('fee_bps', '—')} bps"),
        ("slippage", f"{req.get('slippage_bps', '—')} bps"),
        ("sizing", str(req.get("sizing", "—"))),
        ("candles", pg.integer(data.get("candles"))),
        ("missing bars", pg.integer(data.get("missing_bars"))),
        ("data fingerprint", str(record.get("data_fingerprint") or data.get("fingerprint") or "—")),
        ("code", str(record.get("code_version") or "—")[:12]),
        ("seed", str(record.get("seed", "—"))),
    ]
    if stride > 1:
        out.append(("stored curve", f"every {stride}th bar"))
    return out


def _tiles(summary: Mapping[str, Any]) -> pg.Tiles:
    t = [
        ("Total return", "total_return", pg.pct),
        ("CAGR", "cagr", pg.pct),
        ("Sharpe", "sharpe", pg.num),
        ("Sortino", "sortino", pg.num),
        ("Max drawdown", "max_drawdown", pg.pct),
        ("Annual volatility", "annual_volatility", pg.pct),
        ("Calmar", "calmar", pg.num),
        ("Trades", "trades", pg.integer),
        ("Win rate", "win_rate", pg.pct),
        ("Profit factor", "profit_factor", pg.num),
        ("Exposure", "exposure", pg.pct),
        ("Final equity", "final_equity", pg.num),
    ]
    tiles = [pg.Tile(label, pg.cell(summary.get(key), fmt, key=key)) for label, key, fmt in t]
    if summary.get("drawdown_open"):
        tiles[4] = pg.Tile(tiles[4].label, tiles[4].cell, "still open at the end")
    return pg.Tiles(tiles)


def _price_blocks(
    report: pg.Report, trades: list[dict[str, Any]], price_ts: np.ndarray, close: np.ndarray
) -> list[pg.Block]:
    blocks: list[pg.Block] = []
    shown = trades[-MAX_TRADE_MARKERS:]
    entries = {
        "t": pg.column(np.asarray([t["entry_ts"] for t in shown], np.int64) * 1000),
        "price": pg.column(sr.as_float([t["entry_price"] for t in shown])),
        "side": [str(t["side"]) for t in shown],
    }
    closed = [t for t in shown if not t.get("open")]
    exits = {
        "t": pg.column(np.asarray([t["exit_ts"] for t in closed], np.int64) * 1000),
        "price": pg.column(sr.as_float([t["exit_price"] for t in closed])),
        "pnl": pg.column(sr.as_float([t["pnl"] for t in closed])),
    }
    report.datasets["trade_entries"] = entries
    report.datasets["trade_exits"] = exits
    layers: list[dict[str, Any]] = []
    uses = ["trade_entries", "trade_exits"]
    log = log_range(close, sr.as_float(entries["price"]), sr.as_float(exits["price"]))
    y = ch.quant("price", "price (quote currency)" + (", log scale" if log else ""), log=log)
    if price_ts.size:
        idx = sr.downsample(close)
        report.datasets["price"] = {
            "t": pg.column(price_ts[idx] * 1000),
            "price": pg.column(close[idx]),
        }
        uses.insert(0, "price")
        layers.append(
            {
                "data": {"name": "price"},
                "mark": {"type": "line", "color": ch.COLORS["price"], "strokeWidth": 1},
                "params": [ch.zoom_param()],
                "encoding": {"x": ch.time_x(), "y": y},
            }
        )
    layers.append(
        {
            "data": {"name": "trade_entries"},
            "mark": {"type": "point", "filled": True, "size": 46, "opacity": 0.9},
            "encoding": {
                "x": ch.time_x(),
                "y": y,
                "shape": {
                    "field": "side",
                    "type": "nominal",
                    "scale": {
                        "domain": ["long", "short"],
                        "range": ["triangle-up", "triangle-down"],
                    },
                    "legend": {"title": "entry"},
                },
                "color": {
                    "field": "side",
                    "type": "nominal",
                    "scale": {
                        "domain": ["long", "short"],
                        "range": [ch.COLORS["long"], ch.COLORS["short"]],
                    },
                    "legend": {"title": "entry"},
                },
                "tooltip": [
                    {
                        "field": "t",
                        "type": "temporal",
                        "title": "entry (UTC)",
                        "format": "%Y-%m-%d %H:%M",
                        "formatType": "utc",
                    },
                    {"field": "side", "type": "nominal"},
                    {"field": "price", "type": "quantitative", "format": ",.4~f"},
                ],
            },
        }
    )
    layers.append(
        {
            "data": {"name": "trade_exits"},
            "mark": {
                "type": "point",
                "shape": "circle",
                "size": 16,
                "strokeWidth": 1,
                "color": ch.COLORS["exit"],
                "filled": False,
                "opacity": 0.45,
            },
            "encoding": {
                "x": ch.time_x(),
                "y": y,
                "tooltip": [
                    {
                        "field": "t",
                        "type": "temporal",
                        "title": "exit (UTC)",
                        "format": "%Y-%m-%d %H:%M",
                        "formatType": "utc",
                    },
                    {"field": "price", "type": "quantitative", "format": ",.4~f"},
                    {"field": "pnl", "type": "quantitative", "format": ",.4~f"},
                ],
            },
        }
    )
    what = f"{len(shown):,} trades" + (
        f" (the most recent {MAX_TRADE_MARKERS:,} of {len(trades):,})"
        if len(trades) > MAX_TRADE_MARKERS
        else ""
    )
    spec = ch.base(
        "Trades on price", f"{what}: ▲ long / ▼ short entries at the fill price, ○ exits"
    )
    spec["layer"] = layers
    report.add_chart("price", spec, uses)
    blocks.append(pg.Chart("price", "price line: min/max-preserving downsampling (M4)"))
    if not price_ts.size:
        blocks.append(pg.Note("The price line is not shown: the report was made without prices."))
    return blocks


def _regime_section(stats: list[dict[str, Any]]) -> pg.Section:
    rows = []
    for r in stats:
        small = not r.get("sufficient", True)
        rows.append(
            [
                pg.cell(r.get("kind")),
                pg.cell(str(r.get("regime", "")).lower()),
                pg.cell(r.get("bars"), pg.integer),
                pg.cell(r.get("bars_in_market"), pg.integer),
                pg.cell(r.get("trades"), pg.integer),
                pg.cell(r.get("return"), pg.pct, css=_sign(r.get("return"))),
                pg.cell(r.get("sharpe"), pg.num),
                pg.cell(r.get("hit_rate"), pg.pct),
                pg.Cell(
                    "small sample" if small else "ok",
                    None,
                    "sample",
                    "flag" if small else "",
                ),
            ]
        )
    table = pg.Table(
        "regimes",
        ["kind", "regime", "bars", "in market", "trades", "return", "Sharpe", "hit rate", "sample"],
        rows,
        caption="returns grouped by the regime known when the position was decided; trades by "
        "their regime at entry. 'small sample': fewer than 30 bars or 5 trades, the figures "
        "are noise (docs/backtesting.md)",
        numeric_from=2,
    )
    return pg.Section("Per regime", [table], id="regimes")


def _sign(value: Any) -> str:
    v = pg._finite(value)
    return "" if v is None or v == 0 else ("neg" if v < 0 else "pos")


def _trades_section(trades: list[dict[str, Any]]) -> pg.Section:
    last = trades[-TRADE_ROWS:]
    rows = [
        [
            pg.cell(t.get("side")),
            pg.Cell(pg.utc(t.get("entry_ts"))),
            pg.cell(t.get("entry_price"), lambda v: pg.num(v, 4)),
            pg.Cell(pg.utc(t.get("exit_ts")) + (" (open)" if t.get("open") else "")),
            pg.cell(t.get("exit_price"), lambda v: pg.num(v, 4)),
            pg.cell(t.get("bars_held"), pg.integer),
            pg.cell(t.get("return"), pg.pct, css=_sign(t.get("return"))),
            pg.cell(t.get("pnl"), lambda v: pg.num(v, 4), css=_sign(t.get("pnl"))),
            pg.cell(t.get("costs"), lambda v: pg.num(v, 4)),
        ]
        for t in reversed(last)
    ]
    table = pg.Table(
        "trades",
        ["side", "entry", "entry price", "exit", "exit price", "bars", "return", "pnl", "costs"],
        rows,
        caption=f"the {len(last):,} most recent of {len(trades):,} trades, newest first (the "
        "full list: GET /backtest/runs/{id})",
        numeric_from=2,
        wide=True,
    )
    return pg.Section("Trades", [table], id="trades")
