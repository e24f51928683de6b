"""The simulation report's distributions: terminal return and maximum drawdown as box plots
of the recorded percentiles, with the VaR / ES of the horizon return marked.

One y scale of "lanes" holds everything: the VaR/ES labels on the top lanes (leftmost mark
first, so each label reads to the right of its line, above the lines further right, which
start lower), the box below them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from serve_app.reports import charts as ch
from serve_app.reports import page as pg

LOG_ABOVE = 10.0  # terminal growth spanning more than 10x is drawn on a log scale


def _box(
    report: pg.Report,
    name: str,
    q: Mapping[str, Any],
    ends: tuple[str, str],
    dots: tuple[str, ...],
    *,
    growth: bool,
) -> None:
    """One horizontal box of percentiles ``q`` (``p25``/``p50``/``p75`` box, ``ends``
    whiskers, ``dots`` points, ``mean`` diamond); ``growth`` draws 1 + value."""
    shift = 1.0 if growth else 0.0

    def at(key: str) -> float | None:
        v = pg._finite(q.get(key))
        return None if v is None else v + shift

    report.datasets[name] = {
        "row": [""],
        "lo": [at(ends[0])],
        "hi": [at(ends[1])],
        "q1": [at("p25")],
        "q3": [at("p75")],
        "med": [at("p50")],
        "mean": [at("mean")],
    }
    report.datasets[f"{name}_dots"] = {
        "x": [at(k) for k in dots],
        "what": list(dots),
        "value": [pg._finite(q.get(k)) for k in dots],
    }


LANES = 9.0  # the y axis of a distribution chart: label lanes on top, the box below
LANE_Y: dict[str, Any] = {
    "type": "quantitative",
    "axis": None,
    "scale": {"domain": [-0.6, LANES], "reverse": True, "nice": False, "zero": False},
}


def distribution_section(
    report: pg.Report, hr: Mapping[str, Any], term: Mapping[str, Any], mdd: Mapping[str, Any]
) -> pg.Section:
    # terminal return on the growth axis 1 + r (log when it spans more than 10x)
    _box(report, "terminal_box", term, ("p5", "p95"), ("p1", "p99"), growth=True)
    marks = [
        ("VaR 95%", hr.get("var_95"), "var"),
        ("ES 95%", hr.get("es_95"), "es"),
        ("VaR 99%", hr.get("var_99"), "var"),
        ("ES 99%", hr.get("es_99"), "es"),
    ]
    finite = [(n, pg._finite(v), k) for n, v, k in marks]
    known = sorted(((n, v, k) for n, v, k in finite if v is not None), key=lambda m: m[1])
    # leftmost first, on the top lane: each label reads to the right of its line above the
    # lines further right, which start lower
    report.datasets["risk_marks"] = {
        "x": [1.0 + v for _, v, _ in known],
        "value": [v for _, v, _ in known],
        "kind": [k for _, _, k in known],
        "label": [f"{n} {pg.pct(v)}" for n, v, _ in known],
        "lane": [float(i) for i in range(len(known))],
        "bottom": [LANES] * len(known),
    }
    values = [
        1.0 + v for v in (pg._finite(term.get(k)) for k in ("p1", "p99", "mean")) if v is not None
    ]
    values += report.datasets["risk_marks"]["x"]
    lo, hi = (min(values), max(values)) if values else (0.0, 0.0)
    x_term: dict[str, Any] = {"type": "quantitative", "axis": {"title": "terminal return"}}
    if lo > 0 and hi / lo > LOG_ABOVE:
        x_term["scale"], ticks = ch.log_scale(lo, hi)
        x_term["axis"]["values"] = ticks
        x_term["axis"]["title"] = "terminal return (log scale of 1 + return)"
    else:
        x_term["scale"] = {"zero": False}
        x_term["axis"]["tickCount"] = 8
    x_term["axis"]["labelExpr"] = "format(datum.value - 1, '+.0%')"
    color = {
        "field": "kind",
        "type": "nominal",
        "legend": None,
        "scale": {"domain": ["var", "es"], "range": [ch.COLORS["var"], ch.COLORS["es"]]},
    }
    spec = ch.base(
        "Terminal return",
        "box p25–p75, whiskers p5–p95, dots p1 / p99, tick median, diamond mean; "
        "VaR / ES of the horizon return marked",
        height=190,
    )
    spec["layer"] = [
        ch.rule_at("x", 1.0, strokeDash=[2, 2]),
        *_box_layers("terminal_box", x_term, ch.COLORS["strategy"]),
        {
            "data": {"name": "risk_marks"},
            "mark": {"type": "rule", "strokeWidth": 1.5},
            "encoding": {
                "x": {**x_term, "field": "x"},
                "y": {**LANE_Y, "field": "lane"},
                "y2": {"field": "bottom"},
                "strokeDash": {
                    "field": "kind",
                    "type": "nominal",
                    "legend": None,
                    "scale": {"domain": ["var", "es"], "range": [[6, 3], [1, 0]]},
                },
                "color": color,
            },
        },
        {
            "data": {"name": "risk_marks"},
            "mark": {
                "type": "text",
                "align": "left",
                "baseline": "middle",
                "dx": 5,
                "fontSize": 11,
                "fontWeight": 600,
            },
            "encoding": {
                "x": {**x_term, "field": "x"},
                "y": {**LANE_Y, "field": "lane"},
                "text": {"field": "label"},
                "color": color,
            },
        },
    ]
    report.add_chart("terminal", spec, ["terminal_box", "terminal_box_dots", "risk_marks"])

    _box(report, "drawdown_box", mdd, ("p5", "p95"), ("p99",), growth=False)
    x_dd = {
        "type": "quantitative",
        "scale": {"zero": False},
        "axis": {"title": "maximum drawdown of a path", "format": ".0%", "tickCount": 8},
    }
    dd_spec = ch.base(
        "Maximum drawdown",
        "box p25–p75, whiskers p5 (worst) – p95, dot p99, tick median, diamond mean",
        height=110,
    )
    dd_spec["layer"] = _box_layers("drawdown_box", x_dd, ch.COLORS["drawdown"], lanes=(5.0, 8.0))
    report.add_chart("max_drawdown", dd_spec, ["drawdown_box", "drawdown_box_dots"])
    return pg.Section(
        "Distributions",
        [
            pg.Chart("terminal", "the dotted vertical line is break-even (return 0)"),
            pg.Chart("max_drawdown", ""),
            pg.Note(
                "Drawn from the recorded percentiles of all paths (the result keeps the "
                "quantiles of merged histograms, not the paths)."
            ),
        ],
        id="distributions",
    )


def _box_layers(
    name: str, x: dict[str, Any], color: str, lanes: tuple[float, float] = (5.3, 8.3)
) -> list[dict[str, Any]]:
    """Box, whiskers, median tick, mean diamond and end dots between y ``lanes``."""
    top, bottom = lanes
    mid = (top + bottom) / 2
    y = {**LANE_Y, "datum": top}
    y2 = {"datum": bottom}
    ymid = {**LANE_Y, "datum": mid}
    return [
        {
            "data": {"name": name},
            "mark": {"type": "rule", "color": "#475467"},
            "encoding": {"y": ymid, "x": {**x, "field": "lo"}, "x2": {"field": "hi"}},
        },
        {
            "data": {"name": name},
            "mark": {
                "type": "rect",
                "color": color,
                "opacity": 0.35,
                "stroke": color,
                "strokeWidth": 1.2,
            },
            "encoding": {"y": y, "y2": y2, "x": {**x, "field": "q1"}, "x2": {"field": "q3"}},
        },
        {
            "data": {"name": name},
            "mark": {"type": "rule", "strokeWidth": 2.5, "color": "#101828"},
            "encoding": {"y": y, "y2": y2, "x": {**x, "field": "med"}},
        },
        {
            "data": {"name": name},
            "mark": {
                "type": "point",
                "shape": "diamond",
                "filled": True,
                "size": 70,
                "color": "#101828",
            },
            "encoding": {"y": ymid, "x": {**x, "field": "mean"}},
        },
        {
            "data": {"name": f"{name}_dots"},
            "mark": {"type": "point", "filled": True, "size": 40, "color": "#475467"},
            "encoding": {
                "y": ymid,
                "x": {**x, "field": "x"},
                "tooltip": [
                    {"field": "what", "type": "nominal", "title": "percentile"},
                    {"field": "value", "type": "quantitative", "format": ".2%"},
                ],
            },
        },
    ]
