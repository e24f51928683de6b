"""The stress-simulation report, from the body of ``POST /risk/simulate`` /
``GET /risk/simulations/{id}`` (``result``, ``used``, ``timings``) or a registry record of
kind ``simulation`` (the same under ``results``).

The result holds percentiles, not paths (``docs/risk-simulation.md``), so its size does not
depend on the number of paths: the fan chart draws the equity percentile bands at each fan
step (equity is 1 before the first step), and the distributions of terminal return and of
maximum drawdown are drawn as box plots of the recorded percentiles (box p25-p75, whiskers
p5-p95, dots p1/p99, tick at the median, diamond at the mean), with the VaR and ES of the
horizon return marked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from serve_app.reports import charts as ch
from serve_app.reports import page as pg
from serve_app.reports.distributions import distribution_section

FAN = (1, 5, 25, 50, 75, 95, 99)
LOG_ABOVE = 10.0


def _parts(body: Mapping[str, Any]) -> tuple[dict, dict, dict, str]:
    if "result" in body:
        src: Mapping[str, Any] = body
    elif isinstance(body.get("results"), Mapping) and "result" in body["results"]:
        src = body["results"]
    elif "equity_fan" in body:
        src = {"result": body}
    else:
        status = body.get("status")
        raise ValueError(
            "no simulation result in the body"
            + (f" (status {status!r}: wait until it has succeeded)" if status else "")
            + "; pass the body of POST /risk/simulate or GET /risk/simulations/{id}"
        )
    run_id = str(body.get("run_id") or body.get("id") or "?")
    return dict(src["result"]), dict(src.get("used") or {}), dict(src.get("timings") or {}), run_id


def build_simulation(body: Mapping[str, Any]) -> pg.Report:
    """The simulation report of ``body`` (module docstring)."""
    result, used, timings, run_id = _parts(body)
    hr = dict(result.get("horizon_return") or {})
    term = dict(result.get("terminal_return") or {})
    mdd = dict(result.get("max_drawdown") or {})
    horizon = int(used.get("horizon") or (result.get("equity_fan") or [{}])[-1].get("step", 0))
    source = dict(used.get("source") or {})
    report = pg.Report(
        kind="simulation",
        title=f"Stress simulation: {pg.integer(result.get('paths'))} paths × {horizon} steps",
        subtitle=f"{used.get('generator', '?')} generator on {source.get('kind', '?')} "
        f"returns ({pg.integer(source.get('returns'))} of them) · run {run_id}",
    )
    report.meta = _meta(used, timings)
    tiles = pg.Tiles(
        [
            pg.Tile(
                "Ruin probability",
                pg.cell(result.get("ruin_probability"), pg.pct, key="ruin_probability"),
                f"equity below {used.get('ruin_threshold', '?')} at any step",
            ),
            pg.Tile(
                "Liquidation probability",
                pg.cell(
                    result.get("liquidation_probability"), pg.pct, key="liquidation_probability"
                ),
            ),
            pg.Tile("VaR 99%", pg.cell(hr.get("var_99"), pg.pct, key="var_99"), "horizon return"),
            pg.Tile("ES 99%", pg.cell(hr.get("es_99"), pg.pct, key="es_99"), "horizon return"),
            pg.Tile("Median terminal return", pg.cell(term.get("p50"), pg.pct, key="terminal_p50")),
            pg.Tile(
                "Probability of a loss", pg.cell(term.get("prob_loss"), pg.pct, key="prob_loss")
            ),
            pg.Tile("Median max drawdown", pg.cell(mdd.get("p50"), pg.pct, key="mdd_p50")),
            pg.Tile("Paths", pg.cell(result.get("paths"), pg.integer, key="paths")),
        ]
    )
    report.sections = [
        pg.Section("Summary", [tiles], id="summary"),
        _fan_section(report, result, used),
        distribution_section(report, hr, term, mdd),
        _tables_section(result, hr, term, mdd),
    ]
    return report


def _meta(used: Mapping[str, Any], timings: Mapping[str, Any]) -> list[tuple[str, str]]:
    gen = str(used.get("generator") or "?")
    detail = used.get(gen) or used.get("bootstrap") or used.get("regime_switching") or {}
    shocks = used.get("shocks") or {}
    out = [
        ("generator", gen),
        ("seed", str(used.get("seed", "—"))),
        ("horizon", f"{used.get('horizon', '—')} steps"),
        ("ruin threshold", str(used.get("ruin_threshold", "—"))),
        ("shocks", ", ".join(f"{k}={v}" for k, v in shocks.items()) or "none"),
        ("periods per year", pg.integer((used.get("source") or {}).get("periods_per_year"))),
        ("code", str(used.get("code_version") or "—")[:12]),
    ]
    if isinstance(detail, Mapping) and "block_length" in detail:
        out.insert(1, ("block", f"{detail.get('kind', '')} {pg.num(detail['block_length'])}"))
    if timings:
        out.append(("paths time", f"{pg.num(timings.get('paths_s'))} s"))
    return out


def _fan_section(
    report: pg.Report, result: Mapping[str, Any], used: Mapping[str, Any]
) -> pg.Section:
    fan = list(result.get("equity_fan") or [])
    rows = [{"step": 0, **{f"p{p}": 1.0 for p in FAN}}, *fan]
    report.datasets["fan"] = {
        "step": [int(r["step"]) for r in rows],
        **{f"p{p}": [pg._finite(r.get(f"p{p}")) for r in rows] for p in FAN},
    }
    last = rows[-1]
    p1 = [v for v in report.datasets["fan"]["p1"] if v is not None]
    p99 = [v for v in report.datasets["fan"]["p99"] if v is not None]
    lo, hi = (min(p1), max(p99)) if p1 and p99 else (0.0, 0.0)
    log = lo > 0 and hi / lo > LOG_ABOVE
    report.datasets["fan_last"] = {
        "step": [int(last["step"])] * 3,
        "value": [pg._finite(last.get(k)) for k in ("p5", "p50", "p95")],
        "label": [
            f"{name} {pg.num(last.get(k))}"
            for name, k in (("p5", "p5"), ("median", "p50"), ("p95", "p95"))
        ],
    }
    x = {
        "field": "step",
        "type": "quantitative",
        "axis": {"title": "step"},
        "scale": {"nice": False},
    }
    y: dict[str, Any] = {
        "type": "quantitative",
        "scale": {"zero": False},
        "axis": {"title": "equity (start = 1" + (", log scale)" if log else ")")},
    }
    if log:
        y["scale"], y["axis"]["values"] = ch.log_scale(lo, hi)
        y["axis"]["format"] = "~g"

    def band(lo_k: str, hi_k: str, color: str, name: str) -> dict[str, Any]:
        return {
            "data": {"name": "fan"},
            "transform": [{"calculate": f"'{name}'", "as": "band"}],
            "mark": {"type": "area", "opacity": 0.9},
            "encoding": {
                "x": x,
                "y": {**y, "field": lo_k},
                "y2": {"field": hi_k},
                "color": {
                    "field": "band",
                    "type": "nominal",
                    "scale": {
                        "domain": ["p1–p99", "p5–p95", "p25–p75", "median"],
                        "range": [
                            ch.COLORS["band_outer"],
                            ch.COLORS["band_mid"],
                            ch.COLORS["band_inner"],
                            ch.COLORS["median"],
                        ],
                    },
                    "legend": {"title": None},
                },
            },
        }

    layers: list[dict[str, Any]] = [
        band("p1", "p99", ch.COLORS["band_outer"], "p1–p99"),
        band("p5", "p95", ch.COLORS["band_mid"], "p5–p95"),
        band("p25", "p75", ch.COLORS["band_inner"], "p25–p75"),
        {
            "data": {"name": "fan"},
            "transform": [{"calculate": "'median'", "as": "band"}],
            "mark": {"type": "line", "strokeWidth": 2},
            "encoding": {
                "x": x,
                "y": {**y, "field": "p50"},
                "color": {"field": "band"},
                "tooltip": [{"field": "step", "type": "quantitative"}]
                + [{"field": f"p{p}", "type": "quantitative", "format": ".3f"} for p in FAN],
            },
        },
        ch.rule_at("y", 1.0, strokeDash=[2, 2]),
        *ch.label_layers("fan_last", x, {**y, "field": "value"}, color=ch.COLORS["median"], dy=-9),
    ]
    ruin = pg._finite(used.get("ruin_threshold"))
    if ruin is not None and ruin > 0:
        report.datasets["ruin_line"] = {
            "step": [0],
            "value": [ruin],
            "label": [f"ruin threshold {ruin:g}"],
        }
        layers.append(
            {
                "data": {"name": "ruin_line"},
                "mark": {"type": "rule", "color": ch.COLORS["var"], "strokeDash": [6, 4]},
                "encoding": {"y": {**y, "field": "value"}},
            }
        )
        layers += ch.label_layers(
            "ruin_line", x, {**y, "field": "value"}, color=ch.COLORS["var"], align="left", dy=-8
        )
    spec = ch.base("Equity fan", "percentile bands of equity across all paths", height=300)
    spec["layer"] = layers
    uses = ["fan", "fan_last"] + (["ruin_line"] if "ruin_line" in report.datasets else [])
    report.add_chart("fan", spec, uses)
    caption = (
        f"{len(fan)} fan steps (every ceil(horizon / fan_points) steps and the horizon); "
        "bands from exact merged histograms of log-equity, so the chart's size does not "
        "depend on the number of paths."
    )
    return pg.Section("Equity fan", [pg.Chart("fan", caption)], id="fan")


def _tables_section(
    result: Mapping[str, Any],
    hr: Mapping[str, Any],
    term: Mapping[str, Any],
    mdd: Mapping[str, Any],
) -> pg.Section:
    risk_rows = [
        [
            pg.Cell(f"{lv}%"),
            pg.cell(hr.get(f"var_{lv}"), pg.pct, key=f"var_{lv}"),
            pg.cell(hr.get(f"es_{lv}"), pg.pct, key=f"es_{lv}"),
        ]
        for lv in (95, 99)
    ]
    term_keys = ["mean", "std", *[f"p{p}" for p in FAN], "prob_loss"]
    term_rows = [
        [pg.Cell(k), pg.cell(term.get(k), pg.pct, key=f"terminal_{k}")]
        for k in term_keys
        if k in term
    ]
    dd_keys = ["mean", *[k for k in ("p5", "p25", "p50", "p75", "p95", "p99") if k in mdd]]
    dd_rows = [[pg.Cell(k), pg.cell(mdd.get(k), pg.pct, key=f"mdd_{k}")] for k in dd_keys]
    tuw = dict(result.get("time_under_water") or {})
    tuw_rows = [
        [pg.Cell(k.replace("_", " ")), pg.cell(v, pg.num, key=f"tuw_{k}")]
        for k, v in tuw.items()
        if k != "unit"
    ]
    return pg.Section(
        "Figures",
        [
            pg.Table(
                "horizon-risk",
                ["level", "VaR", "ES"],
                risk_rows,
                caption=str(hr.get("method") or ""),
            ),
            pg.Table(
                "terminal-return",
                ["statistic", "terminal return"],
                term_rows,
                caption="simple return over the horizon; prob_loss = share of paths "
                "ending below the start",
            ),
            pg.Table(
                "max-drawdown",
                ["statistic", "max drawdown"],
                dd_rows,
                caption="per-path maximum drawdown; p5 is the worst 5%",
            ),
            pg.Table("time-under-water", ["statistic", str(tuw.get("unit", "steps"))], tuw_rows),
            pg.Table(
                "probabilities",
                ["event", "probability"],
                [
                    [
                        pg.Cell("ruin"),
                        pg.cell(result.get("ruin_probability"), pg.pct, key="ruin_probability"),
                    ],
                    [
                        pg.Cell("liquidation"),
                        pg.cell(
                            result.get("liquidation_probability"),
                            pg.pct,
                            key="liquidation_probability",
                        ),
                    ],
                ],
            ),
        ],
        id="figures",
    )
