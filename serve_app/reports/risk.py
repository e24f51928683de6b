"""The risk report, from the body of ``POST /risk/report`` and, optionally, of
``GET /risk/correlation`` on the same coins (the report body has no correlation matrix).

Drawn: the correlation heatmap (when the correlation body is given), the portfolio's VaR and
ES contributions per coin at each level (Euler contributions of the normal VaR / ES, which
sum to the portfolio's figure), and each series' VaR and ES by method. Tables give every
figure drawn, from the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from serve_app.reports import charts as ch
from serve_app.reports import page as pg

METHODS = ("historical", "normal", "cornish_fisher")
METHOD_NAMES = {"historical": "historical", "normal": "normal", "cornish_fisher": "Cornish-Fisher"}


def build_risk(
    report_body: Mapping[str, Any], correlation: Mapping[str, Any] | None = None
) -> pg.Report:
    """The risk report of ``report_body`` (module docstring)."""
    series = list(report_body.get("series") or [])
    if not series:
        raise ValueError("no series in the risk report body; pass the body of POST /risk/report")
    labels = [str(s.get("label")) for s in series]
    report = pg.Report(
        kind="risk",
        title="Risk report: " + ", ".join(labels),
        subtitle=f"{pg.integer(report_body.get('n_returns'))} {report_body.get('interval', '')} "
        f"returns, {report_body.get('first_ts', '?')} → {report_body.get('last_ts', '?')}",
    )
    report.meta = [
        ("levels", ", ".join(f"{v:g}" for v in report_body.get("levels") or [])),
        ("periods per year", pg.integer(report_body.get("periods_per_year"))),
        ("source", str((report_body.get("source") or {}).get("kind", "—"))),
    ]
    sections: list[pg.Section] = []
    if correlation is not None:
        sections.append(_correlation_section(report, correlation))
    portfolio = report_body.get("portfolio")
    if portfolio:
        sections.append(_contribution_section(report, portfolio))
    sections.append(_methods_section(report, report_body, series, portfolio))
    sections.append(_series_section(series))
    if correlation is None:
        sections.insert(
            0,
            pg.Section(
                "Correlation",
                [
                    pg.Note(
                        "No correlation heatmap: the report was made without the body of "
                        "GET /risk/correlation."
                    )
                ],
            ),
        )
    report.sections = sections
    return report


def _correlation_section(report: pg.Report, corr: Mapping[str, Any]) -> pg.Section:
    names = [str(c) for c in corr.get("labels") or corr.get("coins") or []]
    matrix = corr.get("matrix") or []
    rows: dict[str, list[Any]] = {"a": [], "b": [], "rho": [], "label": []}
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            v = pg._finite(matrix[i][j])
            rows["a"].append(a)
            rows["b"].append(b)
            rows["rho"].append(v)
            rows["label"].append("" if v is None else pg._minus(f"{v:.2f}"))
    report.datasets["correlation"] = rows
    size = max(160, min(520, 70 * len(names)))
    spec = ch.base(
        f"Correlation ({corr.get('method', 'pearson')})",
        f"{pg.integer(corr.get('n_returns'))} aligned {corr.get('interval', '')} returns",
        height=size,
    )
    spec["width"] = size + 80
    spec.pop("autosize")
    axis = {"title": None, "labelAngle": 0}
    enc = {
        "x": {"field": "b", "type": "nominal", "sort": names, "axis": {**axis, "orient": "top"}},
        "y": {"field": "a", "type": "nominal", "sort": names, "axis": axis},
    }
    spec["layer"] = [
        {
            "data": {"name": "correlation"},
            "mark": {"type": "rect", "stroke": "white"},
            "encoding": {
                **enc,
                "color": {
                    "field": "rho",
                    "type": "quantitative",
                    "scale": {"scheme": "redblue", "domain": [-1, 1], "reverse": True},
                    "legend": {"title": "ρ", "orient": "right", "direction": "vertical"},
                },
                "tooltip": [
                    {"field": "a", "title": "row"},
                    {"field": "b", "title": "column"},
                    {"field": "rho", "type": "quantitative", "format": ".3f"},
                ],
            },
        },
        {
            "data": {"name": "correlation"},
            "mark": {"type": "text", "fontSize": 13},
            "encoding": {
                **enc,
                "text": {"field": "label"},
                "color": {
                    "condition": {"test": "abs(datum.rho) > 0.6", "value": "white"},
                    "value": "#101828",
                },
            },
        },
    ]
    report.add_chart("correlation", spec, ["correlation"])
    table = pg.Table(
        "correlation-matrix",
        ["", *names],
        [
            [pg.Cell(a)]
            + [
                pg.cell(matrix[i][j], lambda v: pg.num(v, 3), key=f"rho_{a}_{b}")
                for j, b in enumerate(names)
            ]
            for i, a in enumerate(names)
        ],
        caption=f"dropped timestamps (not every coin has them): "
        f"{pg.integer(corr.get('dropped_timestamps'))}",
    )
    return pg.Section(
        "Correlation", [pg.Chart("correlation", "", wide=False), table], id="correlation"
    )


def _contribution_section(report: pg.Report, portfolio: Mapping[str, Any]) -> pg.Section:
    contrib = list(portfolio.get("contributions") or [])
    weights = dict(portfolio.get("weights") or {})
    data: dict[str, list[Any]] = {"coin": [], "level": [], "measure": [], "value": []}
    for c in contrib:
        for measure in ("var", "es"):
            for coin, v in (c.get(measure) or {}).items():
                data["coin"].append(coin)
                data["level"].append(f"{float(c['level']):g}")
                data["measure"].append("VaR" if measure == "var" else "ES")
                data["value"].append(pg._finite(v))
    report.datasets["contributions"] = data
    coins = list(weights) or sorted(set(data["coin"]))
    spec = ch.base(
        "VaR and ES contributions",
        "Euler contributions of the normal (covariance) VaR / ES; they sum to the portfolio's",
        height=220,
    )
    for key in ("width", "height", "autosize"):
        spec.pop(key)
    spec["data"] = {"name": "contributions"}
    spec["facet"] = {
        "column": {
            "field": "level",
            "type": "ordinal",
            "header": {"title": "level", "labelFontSize": 12},
        }
    }
    spec["spec"] = {
        "width": 300,
        "height": 220,
        "mark": {"type": "bar"},
        "encoding": {
            "x": {
                "field": "coin",
                "type": "nominal",
                "sort": coins,
                "axis": {"title": None, "labelAngle": 0},
            },
            "xOffset": {"field": "measure", "sort": ["VaR", "ES"]},
            "y": ch.quant("value", "contribution (return)", fmt=".1%", zero=True),
            "color": {
                "field": "measure",
                "type": "nominal",
                "scale": {"domain": ["VaR", "ES"], "range": [ch.COLORS["var"], ch.COLORS["es"]]},
                "legend": {"title": None},
            },
            "tooltip": [
                {"field": "coin"},
                {"field": "level"},
                {"field": "measure"},
                {"field": "value", "type": "quantitative", "format": ".3%"},
            ],
        },
    }
    spec.pop("layer", None)
    report.add_chart("contributions", spec, ["contributions"])
    rows = []
    for c in contrib:
        lv = f"{float(c['level']):g}"
        var, es = dict(c.get("var") or {}), dict(c.get("es") or {})
        for coin in coins:
            rows.append(
                [
                    pg.Cell(lv),
                    pg.Cell(coin),
                    pg.cell(weights.get(coin), lambda v: pg.num(v, 3)),
                    pg.cell(var.get(coin), pg.pct, key=f"var_{lv}_{coin}"),
                    pg.cell(es.get(coin), pg.pct, key=f"es_{lv}_{coin}"),
                ]
            )
        rows.append(
            [
                pg.Cell(lv),
                pg.Cell("sum", css="flag"),
                pg.cell(sum(weights.values()), lambda v: pg.num(v, 3)),
                pg.cell(sum(v for v in var.values() if v is not None), pg.pct, key=f"var_{lv}_sum"),
                pg.cell(sum(v for v in es.values() if v is not None), pg.pct, key=f"es_{lv}_sum"),
            ]
        )
    table = pg.Table(
        "contributions",
        ["level", "coin", "weight", "VaR contribution", "ES contribution"],
        rows,
        caption=f"portfolio σ per bar {pg.pct(portfolio.get('sigma'), 3)}; covariance "
        f"{portfolio.get('covariance', 'sample')}",
        numeric_from=2,
    )
    return pg.Section(
        "Portfolio VaR / ES contributions",
        [pg.Chart("contributions", ""), table],
        id="contributions",
    )


def _methods_section(
    report: pg.Report,
    body: Mapping[str, Any],
    series: list[dict[str, Any]],
    portfolio: Mapping[str, Any] | None,
) -> pg.Section:
    named = [(str(s["label"]), s.get("levels") or []) for s in series]
    if portfolio:
        named.append(("portfolio", portfolio.get("levels") or []))
    data: dict[str, list[Any]] = {"series": [], "level": [], "method": [], "var": [], "es": []}
    rows = []
    for label, levels in named:
        for lv in levels:
            level = f"{float(lv['level']):g}"
            row = [pg.Cell(label), pg.Cell(level)]
            for measure in ("var", "es"):
                for m in METHODS:
                    v = pg._finite((lv.get(measure) or {}).get(m))
                    row.append(pg.cell(v, pg.pct, key=f"{measure}_{label}_{level}_{m}"))
            for m in METHODS:
                data["series"].append(label)
                data["level"].append(level)
                data["method"].append(METHOD_NAMES[m])
                data["var"].append(pg._finite((lv.get("var") or {}).get(m)))
                data["es"].append(pg._finite((lv.get("es") or {}).get(m)))
            rows.append(row)
    report.datasets["var_methods"] = data
    order = [n for n, _ in named]
    spec = ch.base(
        "VaR and ES by method", "one-bar return at each level; ES drawn as ticks", height=220
    )
    for key in ("width", "height", "autosize"):
        spec.pop(key)
    spec["data"] = {"name": "var_methods"}
    spec["facet"] = {
        "column": {
            "field": "level",
            "type": "ordinal",
            "header": {"title": "level", "labelFontSize": 12},
        }
    }
    x = {
        "field": "series",
        "type": "nominal",
        "sort": order,
        "axis": {"title": None, "labelAngle": 0},
    }
    color = {
        "field": "method",
        "type": "nominal",
        "scale": {
            "domain": list(METHOD_NAMES.values()),
            "range": ["#1f5fbf", "#98a2b3", "#dc6803"],
        },
        "legend": {"title": None},
    }
    spec["spec"] = {
        "width": 320,
        "height": 220,
        "layer": [
            {
                "mark": {"type": "bar"},
                "encoding": {
                    "x": x,
                    "xOffset": {"field": "method", "sort": list(METHOD_NAMES.values())},
                    "y": ch.quant("var", "VaR (bar), ES (tick)", fmt=".1%", zero=True),
                    "color": color,
                    "tooltip": [
                        {"field": "series"},
                        {"field": "method"},
                        {"field": "var", "type": "quantitative", "format": ".3%"},
                        {"field": "es", "type": "quantitative", "format": ".3%"},
                    ],
                },
            },
            {
                "mark": {"type": "tick", "thickness": 2, "color": "#101828"},
                "encoding": {
                    "x": x,
                    "xOffset": {"field": "method", "sort": list(METHOD_NAMES.values())},
                    "y": {"field": "es", "type": "quantitative"},
                },
            },
        ],
    }
    report.add_chart("var_methods", spec, ["var_methods"])
    methods = body.get("methods") or {}
    names = [METHOD_NAMES[m] for m in METHODS]
    table = pg.Table(
        "var-es",
        ["series", "level", *[f"VaR {n}" for n in names], *[f"ES {n}" for n in names]],
        rows,
        caption="one-bar returns; VaR and ES reported as returns (negative = loss)",
        numeric_from=2,
    )
    notes = [pg.Note(f"{METHOD_NAMES.get(k, k)}: {v}") for k, v in methods.items()]
    return pg.Section("VaR and ES", [pg.Chart("var_methods", ""), table, *notes], id="var-es")


def _series_section(series: list[dict[str, Any]]) -> pg.Section:
    rows = []
    for s in series:
        dd = s.get("drawdown") or {}
        roll = s.get("rolling") or {}
        lab = str(s.get("label"))
        rows.append(
            [
                pg.Cell(lab),
                pg.cell(s.get("n_returns"), pg.integer),
                pg.cell(s.get("vol_annualised"), pg.pct, key=f"vol_{lab}"),
                pg.cell(s.get("skewness"), pg.num),
                pg.cell(s.get("excess_kurtosis"), pg.num),
                pg.cell(dd.get("max"), pg.pct, key=f"max_drawdown_{lab}"),
                pg.Cell("open" if dd.get("open") else "recovered"),
                pg.cell(roll.get("breaches"), pg.integer),
                pg.cell(roll.get("tested"), pg.integer),
                pg.cell(roll.get("kupiec_p_value"), lambda v: pg.num(v, 3)),
            ]
        )
    table = pg.Table(
        "series",
        [
            "series",
            "returns",
            "vol (ann.)",
            "skew",
            "excess kurtosis",
            "max drawdown",
            "drawdown",
            "rolling VaR breaches",
            "tested",
            "Kupiec p",
        ],
        rows,
        caption="rolling VaR: historical, trailing window; Kupiec's test of the breach rate",
    )
    return pg.Section("Per series", [table], id="series")
