"""Vega-Lite building blocks shared by the reports: theme, time axis, lines, labels, heatmap.

Specs name their data (``{"data": {"name": ...}}``); the page or the exporter supplies it.
Times are drawn from ``t`` (unix milliseconds) on a UTC scale.
"""

from __future__ import annotations

import math
from typing import Any

FONT = "DejaVu Sans, Liberation Sans, Arial, sans-serif"
COLORS = {
    "strategy": "#1f5fbf",
    "benchmark": "#8a94a6",
    "drawdown": "#c0392b",
    "sharpe": "#6941c6",
    "vol": "#dc6803",
    "price": "#344054",
    "long": "#079455",
    "short": "#d92d20",
    "exit": "#344054",
    "band_outer": "#d1e0f5",
    "band_mid": "#a4c2ec",
    "band_inner": "#6f9fe0",
    "median": "#123f87",
    "var": "#b42318",
    "es": "#7a271a",
    "is": "#98a2b3",
    "oos": "#1f5fbf",
}
HEIGHT = 240

CONFIG: dict[str, Any] = {
    "font": FONT,
    "background": "white",
    "padding": 6,
    "view": {"stroke": None},
    "axis": {
        "labelFontSize": 11,
        "titleFontSize": 12,
        "titleFontWeight": 600,
        "titleColor": "#344054",
        "labelColor": "#475467",
        "gridColor": "#eaecf0",
        "domainColor": "#98a2b3",
        "tickColor": "#98a2b3",
    },
    "legend": {"orient": "top", "labelFontSize": 12, "symbolSize": 120, "direction": "horizontal"},
    "title": {
        "fontSize": 15,
        "fontWeight": 600,
        "anchor": "start",
        "color": "#1d2433",
        "subtitleColor": "#5b6474",
        "subtitleFontSize": 12,
        "offset": 8,
    },
    "text": {"font": FONT},
}


def base(title: str, subtitle: str = "", height: int = HEIGHT) -> dict[str, Any]:
    """A container-wide spec with the theme and a title."""
    t: dict[str, Any] = {"text": title}
    if subtitle:
        t["subtitle"] = subtitle
    return {
        "width": "container",
        "height": height,
        "autosize": {"type": "fit-x", "contains": "padding"},
        "config": CONFIG,
        "title": t,
    }


def time_x(title: str | None = None) -> dict[str, Any]:
    return {
        "field": "t",
        "type": "temporal",
        "scale": {"type": "utc"},
        "axis": {"title": title, "labelOverlap": True, "tickCount": 8},
    }


def quant(
    field: str,
    title: str,
    *,
    fmt: str | None = None,
    log: tuple[float, float] | None = None,
    zero: bool = False,
    domain: list[float] | None = None,
) -> dict[str, Any]:
    """A quantitative channel; ``log=(lo, hi)`` makes it a log scale with 1-2-5 ticks."""
    enc: dict[str, Any] = {"field": field, "type": "quantitative", "axis": {"title": title}}
    scale: dict[str, Any] = {"zero": zero}
    if log is not None:
        scale, values = log_scale(*log)
        enc["axis"]["values"] = values
        enc["axis"]["format"] = "~g"
    if domain is not None:
        scale["domain"] = domain
    enc["scale"] = scale
    if fmt:
        enc["axis"]["format"] = fmt
    return enc


def log_ticks(lo: float, hi: float) -> list[float]:
    """Axis values 1-2-5 x 10^k between ``lo`` and ``hi`` (a log axis without clutter)."""
    if not (lo > 0 and hi > lo):
        return []
    out = []
    for k in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = float(f"{m}e{k}")
            if lo <= v <= hi:
                out.append(v)
    return out


def log_scale(lo: float, hi: float) -> tuple[dict[str, Any], list[float]]:
    """A log scale padded 5 % (in log terms) around ``[lo, hi]`` and its tick values."""
    pad = (hi / lo) ** 0.04
    return {"type": "log", "nice": False, "domain": [lo / pad, hi * pad]}, log_ticks(
        lo / pad, hi * pad
    )


def rule_at(channel: str, value: float, **mark: Any) -> dict[str, Any]:
    """A horizontal (``y``) or vertical (``x``) reference line at ``value``."""
    return {
        "data": {"values": [{}]},
        "mark": {"type": "rule", "color": "#667085", **mark},
        "encoding": {channel: {"datum": value}},
    }


def zoom_param() -> dict[str, Any]:
    """Drag to pan, wheel to zoom the x axis."""
    return {"name": "zoom", "select": {"type": "interval", "encodings": ["x"]}, "bind": "scales"}


def tooltip_time(fields: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    """Tooltip entries: the UTC time, then ``(field, title, d3 format)`` values."""
    out: list[dict[str, Any]] = [
        {
            "field": "t",
            "type": "temporal",
            "title": "time (UTC)",
            "format": "%Y-%m-%d %H:%M",
            "formatType": "utc",
        }
    ]
    out += [{"field": f, "type": "quantitative", "title": t, "format": fm} for f, t, fm in fields]
    return out


def hover_layers(
    data: str, fields: list[tuple[str, str, str]], y_field: str, y_enc: dict[str, Any]
) -> list[dict[str, Any]]:
    """An invisible nearest-point selection with a vertical rule and a tooltip."""
    return [
        {
            "data": {"name": data},
            "mark": {"type": "point", "opacity": 0, "size": 40},
            "params": [
                {
                    "name": "hover",
                    "select": {
                        "type": "point",
                        "encodings": ["x"],
                        "nearest": True,
                        "on": "pointermove",
                        "clear": "pointerout",
                    },
                }
            ],
            "encoding": {"x": time_x(), "y": {**y_enc, "field": y_field}},
        },
        {
            "data": {"name": data},
            "mark": {"type": "rule", "color": "#98a2b3", "strokeWidth": 1},
            "transform": [{"filter": {"param": "hover", "empty": False}}],
            "encoding": {"x": time_x(), "tooltip": tooltip_time(fields)},
        },
    ]


def label_layers(
    data: str,
    x: dict[str, Any],
    y: dict[str, Any],
    *,
    color: str,
    align: str = "right",
    dy: int = -10,
    size: int = 12,
) -> list[dict[str, Any]]:
    """Text marks reading the ``label`` field (numbers drawn on the chart), over a white
    halo so they stay readable on top of lines and areas."""
    mark = {
        "type": "text",
        "align": align,
        "dy": dy,
        "dx": -6 if align == "right" else 6,
        "fontSize": size,
        "fontWeight": 600,
    }
    enc = {"x": x, "y": y, "text": {"field": "label"}}
    return [
        {
            "data": {"name": data},
            "mark": {
                **mark,
                "stroke": "white",
                "strokeWidth": 4,
                "strokeOpacity": 0.85,
                "fill": "white",
            },
            "encoding": enc,
        },
        {
            "data": {"name": data},
            "mark": {**mark, "color": color},
            "encoding": enc,
            "name": f"label_{data}",
        },
    ]


def dot_layer(data: str, x: dict[str, Any], y: dict[str, Any], color: str) -> dict[str, Any]:
    return {
        "data": {"name": data},
        "mark": {"type": "point", "filled": True, "size": 45, "color": color},
        "encoding": {"x": x, "y": y},
    }


MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def monthly_heatmap(data: str, title: str, subtitle: str, years: int, span: float) -> dict:
    """Year x month cells coloured by return (diverging around 0, ``±span`` saturated),
    each cell labelled with its return in percent."""
    spec = base(title, subtitle, height=max(60, 26 * years))
    color = {
        "field": "ret",
        "type": "quantitative",
        "title": "return",
        "scale": {
            "scheme": "redyellowgreen",
            "domain": [-span, 0, span],
            "clamp": True,
        },
        "legend": {
            "format": ".0%",
            "orient": "right",
            "direction": "vertical",
            "gradientLength": max(40, 26 * years - 10),
        },
    }
    x = {
        "field": "month_name",
        "type": "ordinal",
        "sort": MONTHS,
        "scale": {"domain": MONTHS},
        "axis": {"title": None, "orient": "top", "labelAngle": 0},
    }
    y = {"field": "year", "type": "ordinal", "axis": {"title": None}, "sort": "ascending"}
    spec["layer"] = [
        {
            "data": {"name": data},
            "mark": {"type": "rect", "stroke": "white", "strokeWidth": 1.5},
            "encoding": {
                "x": x,
                "y": y,
                "color": color,
                "tooltip": [
                    {"field": "year", "type": "ordinal"},
                    {"field": "month_name", "type": "nominal", "title": "month"},
                    {"field": "ret", "type": "quantitative", "format": "+.2%", "title": "return"},
                ],
            },
        },
        {
            "data": {"name": data},
            "mark": {"type": "text", "fontSize": 11},
            "encoding": {
                "x": x,
                "y": y,
                "text": {"field": "label"},
                "color": {
                    "condition": {"test": f"abs(datum.ret) > {0.7 * span!r}", "value": "white"},
                    "value": "#1d2433",
                },
            },
        },
    ]
    return spec
