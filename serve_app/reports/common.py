"""Parts the backtest and walk-forward reports share: equity, drawdown, monthly returns,
rolling statistics and the metrics table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from serve_app.reports import charts as ch
from serve_app.reports import page as pg
from serve_app.reports import series as sr

LOG_ABOVE = 10.0  # a curve spanning more than 10x is drawn on a log scale
HOVER_POINTS = 600  # points the equity tooltip snaps to (a Voronoi cell each: keep it small)


def log_range(*arrays: np.ndarray | None) -> tuple[float, float] | None:
    """``(min, max)`` of the arrays when they are positive and span more than
    ``LOG_ABOVE``x (then drawn on a log scale), else None."""
    parts = [a[np.isfinite(a)] for a in arrays if a is not None and a.size]
    vals = np.concatenate(parts) if parts else np.zeros(0)
    if vals.size and vals.min() > 0 and vals.max() / vals.min() > LOG_ABOVE:
        return float(vals.min()), float(vals.max())
    return None


def equity_chart(
    report: pg.Report,
    ts: np.ndarray,
    equity: np.ndarray,
    bench: np.ndarray | None,
    *,
    dd_for_points: np.ndarray,
    label: str,
    title: str,
    background: Sequence[dict[str, Any]] = (),
    background_uses: Sequence[str] = (),
    caption: str = "",
) -> list[pg.Block]:
    """Equity (and buy-and-hold) over time; also stores the ``curve`` data set (with the
    drawdown) that :func:`drawdown_chart` draws, so both charts share their points."""
    keep = [equity, dd_for_points] + ([bench] if bench is not None else [])
    idx = sr.downsample(*keep)
    curve: dict[str, list[Any]] = {
        "t": pg.column(ts[idx] * 1000),
        "equity": pg.column(equity[idx]),
        "drawdown": pg.column(dd_for_points[idx]),
    }
    if bench is not None:
        curve["benchmark"] = pg.column(bench[idx])
    report.datasets["curve"] = curve
    last = len(equity) - 1
    ends: dict[str, list[Any]] = {
        "t": [int(ts[last]) * 1000],
        "value": [float(equity[last])],
        "label": [pg.num(equity[last])],
    }
    report.datasets["equity_last"] = ends
    log = log_range(equity, bench)
    y = ch.quant("value", "equity" + (" (log scale)" if log else ""), log=log)
    names = {"equity": label, "benchmark": "buy and hold"}
    keys = ["equity"] + (["benchmark"] if bench is not None else [])
    lines = {
        "data": {"name": "curve"},
        "transform": [
            {"fold": keys, "as": ["key", "value"]},
            {"calculate": f"datum.key == 'equity' ? '{label}' : 'buy and hold'", "as": "series"},
        ],
        "mark": {"type": "line", "strokeWidth": 1.4},
        "params": [ch.zoom_param()],
        "encoding": {
            "x": ch.time_x(),
            "y": y,
            "color": {
                "field": "series",
                "type": "nominal",
                "scale": {
                    "domain": [names[k] for k in keys],
                    "range": [ch.COLORS["strategy"], ch.COLORS["benchmark"]][: len(keys)],
                },
                "legend": {"title": None},
            },
        },
    }
    tips = [("equity", label, ",.4~f")]
    if bench is not None:
        tips.append(("benchmark", "buy and hold", ",.4~f"))
    tips.append(("drawdown", "drawdown", ".2%"))
    spec = ch.base(title, f"last point {pg.num(equity[last])} on {pg.utc(ts[last])}")
    spec["layer"] = [
        *background,
        lines,
        ch.dot_layer(
            "equity_last",
            ch.time_x(),
            {"field": "value", "type": "quantitative"},
            ch.COLORS["strategy"],
        ),
        *ch.label_layers(
            "equity_last",
            ch.time_x(),
            {"field": "value", "type": "quantitative"},
            color=ch.COLORS["strategy"],
        ),
        *ch.hover_layers("curve_hover", tips, "equity", {"type": "quantitative"}),
    ]
    hover = np.unique(np.r_[np.linspace(0, len(idx) - 1, min(len(idx), HOVER_POINTS)).astype(int)])
    report.datasets["curve_hover"] = {k: [v[i] for i in hover] for k, v in curve.items()}
    report.add_chart("equity", spec, [*background_uses, "curve", "equity_last", "curve_hover"])
    text = caption or (
        f"{len(equity):,} points drawn as {len(idx):,} (min/max-preserving M4 downsampling; "
        "the last point and the drawdown trough are exact). Drag to pan, scroll to zoom."
    )
    return [pg.Chart("equity", text)]


def drawdown_chart(
    report: pg.Report,
    ts: np.ndarray,
    dd: np.ndarray,
    max_drawdown: Any,
    trough_ts: Any = None,
) -> list[pg.Block]:
    """The underwater curve from the ``curve`` data set, the max drawdown labelled at its
    trough (the metric's value; the trough is the curve's lowest point)."""
    finite = np.where(np.isfinite(dd), dd, np.inf)
    k = int(np.argmin(finite)) if dd.size else 0
    value = pg._finite(max_drawdown)
    value = float(dd[k]) if value is None else value
    t_k = int(trough_ts) if pg._finite(trough_ts) is not None else int(ts[k])
    report.datasets["dd_trough"] = {
        "t": [t_k * 1000],
        "drawdown": [value],
        "label": [f"max drawdown {pg.pct(value)} ({pg.utc(t_k, time=False)})"],
    }
    right = bool(ts.size) and (t_k - ts[0]) > 0.5 * (ts[-1] - ts[0])
    y = ch.quant("drawdown", "drawdown", fmt=".0%", zero=True)
    spec = ch.base("Drawdown (underwater)", "equity / running peak − 1", height=180)
    spec["layer"] = [
        {
            "data": {"name": "curve"},
            "mark": {
                "type": "area",
                "color": ch.COLORS["drawdown"],
                "opacity": 0.35,
                "line": {"color": ch.COLORS["drawdown"], "strokeWidth": 1},
            },
            "params": [ch.zoom_param()],
            "encoding": {"x": ch.time_x(), "y": y},
        },
        ch.dot_layer(
            "dd_trough",
            ch.time_x(),
            {"field": "drawdown", "type": "quantitative"},
            ch.COLORS["drawdown"],
        ),
        *ch.label_layers(
            "dd_trough",
            ch.time_x(),
            {"field": "drawdown", "type": "quantitative"},
            color="#7a271a",
            align="right" if right else "left",
            dy=-12,
        ),
    ]
    report.add_chart("drawdown", spec, ["curve", "dd_trough"])
    return [pg.Chart("drawdown", "")]


def monthly_section(
    report: pg.Report, ts: np.ndarray, equity: np.ndarray, base: float
) -> pg.Section:
    """Heatmap of monthly returns (UTC calendar months) and the yearly totals."""
    m = sr.monthly_returns(ts, equity, base)
    names = [ch.MONTHS[i - 1] for i in m.month.tolist()]
    report.datasets["monthly"] = {
        "year": [str(y) for y in m.year.tolist()],
        "month": pg.column(m.month),
        "month_name": names,
        "ret": pg.column(m.ret),
        "label": [pg._minus(f"{v * 100:+.1f}") if np.isfinite(v) else "" for v in m.ret],
    }
    finite = np.abs(m.ret[np.isfinite(m.ret)])
    span = float(np.quantile(finite, 0.9)) if finite.size else 0.1
    years = len(set(m.year.tolist()))
    spec = ch.monthly_heatmap(
        "monthly",
        "Monthly returns (%)",
        "compounded within each calendar month, UTC",
        years,
        max(span, 0.01),
    )
    report.add_chart("monthly", spec, ["monthly"])
    yrs, yearly = sr.yearly_from_monthly(m)
    table = pg.Table(
        "yearly",
        ["year", "return", "months"],
        [
            [
                pg.Cell(str(y)),
                pg.cell(float(r), pg.pct, key=f"year_{y}"),
                pg.cell(int((m.year == y).sum()), pg.integer),
            ]
            for y, r in zip(yrs.tolist(), yearly.tolist(), strict=True)
        ],
        caption="calendar-year returns compounded from the months above (a first or last "
        "year with fewer than 12 months is partial)",
    )
    saturate = pg.pct(max(span, 0.01), 0)
    note = f"Colours saturate at ±{saturate} (the 90th percentile of |monthly return|)."
    return pg.Section("Monthly returns", [pg.Chart("monthly", note), table], id="monthly")


def rolling_section(
    report: pg.Report, t: np.ndarray, r: np.ndarray, ppy: float, stride: int
) -> pg.Section:
    """Rolling Sharpe and volatility of the returns ``r`` (each at the time ``t`` of the
    point it ends at; the window is in the caption)."""
    w = sr.rolling_window(ppy, r.size)
    roll = sr.rolling_stats(r, w, ppy)
    idx = sr.downsample(roll.sharpe, roll.volatility)
    idx = idx[np.isfinite(roll.volatility[idx])]
    report.datasets["rolling"] = {
        "t": pg.column(t[idx] * 1000),
        "sharpe": pg.column(roll.sharpe[idx]),
        "vol": pg.column(roll.volatility[idx]),
    }
    days = w * 365.0 / ppy
    what = f"trailing {w:,} returns (≈{days:,.0f} days), annualised with {ppy:,.0f} periods/year"
    charts = []
    x = ch.time_x()
    if t.size:
        x["scale"]["domain"] = [int(t[0]) * 1000, int(t[-1]) * 1000]
    for name, field, title, fmt, color in (
        ("rolling_sharpe", "sharpe", "Rolling Sharpe", ".1f", ch.COLORS["sharpe"]),
        ("rolling_vol", "vol", "Rolling volatility (annualised)", ".0%", ch.COLORS["vol"]),
    ):
        spec = ch.base(title, what, height=170)
        y = ch.quant(field, title.split(" (")[0].lower().replace("rolling ", ""), fmt=fmt)
        layer: list[dict[str, Any]] = [
            {
                "data": {"name": "rolling"},
                "mark": {"type": "line", "color": color, "strokeWidth": 1.2},
                "params": [ch.zoom_param()],
                "encoding": {"x": x, "y": y},
            }
        ]
        if field == "sharpe":
            layer.append(ch.rule_at("y", 0.0, strokeDash=[3, 3]))
        spec["layer"] = layer
        report.add_chart(name, spec, ["rolling"])
        charts.append(pg.Chart(name, ""))
    blocks: list[pg.Block] = list(charts)
    blocks.append(
        pg.Note(
            f"Window: {what}; Sharpe = mean / sample std (ddof 1) x √periods, no risk-free rate"
            + (f"; the stored curve keeps every {stride}th bar" if stride > 1 else "")
            + "."
        )
    )
    if not np.isfinite(roll.volatility).any():
        blocks.append(pg.Note("Too few returns for a rolling window.", warn=True))
    return pg.Section("Rolling Sharpe and volatility", blocks, id="rolling")


METRICS: list[tuple[str, str, pg.Formatter]] = [
    ("total_return", "total return", pg.pct),
    ("cagr", "CAGR", pg.pct),
    ("annual_volatility", "annual volatility", pg.pct),
    ("sharpe", "Sharpe", pg.num),
    ("sortino", "Sortino", pg.num),
    ("calmar", "Calmar", pg.num),
    ("max_drawdown", "max drawdown", pg.pct),
    ("max_drawdown_duration", "max drawdown duration (bars)", pg.integer),
    ("max_drawdown_open", "max drawdown still open", pg.text),
    ("max_drawdown_peak_ts", "max drawdown peak", pg.utc),
    ("max_drawdown_trough_ts", "max drawdown trough", pg.utc),
    ("max_drawdown_recovery_ts", "max drawdown recovery", pg.utc),
    ("current_drawdown", "current drawdown", pg.pct),
    ("drawdown_open", "drawdown open at the end", pg.text),
    ("longest_drawdown", "longest drawdown (bars)", pg.integer),
    ("time_under_water", "time under water", pg.pct),
    ("exposure", "exposure (share of bars in market)", pg.pct),
    ("turnover", "turnover (x equity)", pg.num),
    ("turnover_annual", "turnover per year", pg.num),
    ("trades", "trades", pg.integer),
    ("closed_trades", "closed trades", pg.integer),
    ("open_trades", "open trades", pg.integer),
    ("win_rate", "win rate (closed)", pg.pct),
    ("profit_factor", "profit factor", pg.num),
    ("avg_trade_return", "average trade return", pg.pct),
    ("avg_trade_pnl", "average trade pnl", lambda v: pg.num(v, 4)),
    ("fees_paid", "fees paid", lambda v: pg.num(v, 4)),
    ("slippage_paid", "slippage paid", lambda v: pg.num(v, 4)),
    ("funding_paid", "funding paid", lambda v: pg.num(v, 4)),
    ("initial_capital", "initial capital", pg.num),
    ("final_equity", "final equity", pg.num),
    ("ruined", "ruined", pg.text),
    ("bars", "bars", pg.integer),
    ("returns", "returns", pg.integer),
    ("periods_per_year", "periods per year", pg.integer),
    ("start_ts", "first bar", pg.utc),
    ("end_ts", "last bar", pg.utc),
]


def metric_rows(summary: Mapping[str, Any]) -> list[list[pg.Cell]]:
    """One row per known metric present (in a fixed order), then any others."""
    known = {k for k, _, _ in METRICS}
    rows = [
        [pg.Cell(label), pg.cell(summary[key], fmt, key=key)]
        for key, label, fmt in METRICS
        if key in summary
    ]
    rows += [
        [pg.Cell(key.replace("_", " ")), pg.cell(v, pg.text, key=key)]
        for key, v in summary.items()
        if key not in known and not isinstance(v, dict | list)
    ]
    return rows
