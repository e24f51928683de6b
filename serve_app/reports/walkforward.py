"""The walk-forward report, from a run-registry record of kind ``walkforward``.

What it reads: ``equity`` (the stitched out-of-sample curve, ``ts`` and ``equity``, starting
at 1 before its first return: ``compute.walkforward.stitch``), ``summary`` (the OOS metrics,
``folds``, ``fading``), ``results.folds`` (train/test spans, chosen parameters, IS and OOS
metrics, OOS/IS ratio), ``results.decay`` and ``results.regime_checks``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from serve_app.reports import charts as ch
from serve_app.reports import page as pg
from serve_app.reports import series as sr
from serve_app.reports.common import (
    drawdown_chart,
    equity_chart,
    metric_rows,
    monthly_section,
    rolling_section,
)

STITCH_CAPITAL = 1.0  # compute.walkforward.stitch's starting equity


def build_walkforward(record: Mapping[str, Any]) -> pg.Report:
    """The walk-forward report of ``record`` (module docstring)."""
    if record.get("kind", "walkforward") != "walkforward":
        raise ValueError(f"run {record.get('id')!r} is a {record.get('kind')}, not a walk-forward")
    equity = dict(record.get("equity") or {})
    if not equity.get("ts") or not equity.get("equity"):
        raise ValueError(
            f"run {record.get('id')!r} has no stitched out-of-sample curve (status "
            f"{record.get('status')!r}); a report needs a succeeded walk-forward run"
        )
    summary = dict(record.get("summary") or {})
    results = dict(record.get("results") or {})
    used = dict(results.get("used") or {})
    folds = list(results.get("folds") or [])
    decay = dict(results.get("decay") or {})
    ts = np.asarray(equity["ts"], np.int64)
    eq = sr.as_float(equity["equity"])
    dd = sr.drawdown(eq, anchor=STITCH_CAPITAL)
    ppy = float(used.get("periods_per_year") or 365.0)
    coin = str(record.get("coin") or used.get("coin") or "?")
    interval = str(record.get("interval") or used.get("interval") or "?")
    strategy = str(record.get("strategy") or used.get("strategy") or "?")
    objective = str(decay.get("objective") or "sharpe")

    report = pg.Report(
        kind="walkforward",
        title=f"Walk-forward {strategy} on {coin} {interval}",
        subtitle=f"{len(folds)} folds, out of sample {pg.utc(ts[0])} → {pg.utc(ts[-1])} · "
        f"run {record.get('id', '?')}",
    )
    req = record.get("request") or {}
    report.meta = [
        ("grid", ", ".join(f"{k}∈{v}" for k, v in (req.get("grid") or {}).items()) or "—"),
        ("grid size", str(results.get("grid_size", "—"))),
        ("objective", objective),
        ("train / test bars", f"{req.get('train_bars', '—')} / {req.get('test_bars', '—')}"),
        ("purge bars", str(req.get("purge_bars", 0))),
        ("anchored", pg.text(req.get("anchored", False))),
        ("fees", f"{req.get('fee_bps', '—')} bps"),
        ("data fingerprint", str(record.get("data_fingerprint") or "—")),
        ("code", str(record.get("code_version") or "—")[:12]),
    ]
    tiles = pg.Tiles(
        [
            pg.Tile(
                "OOS total return", pg.cell(summary.get("total_return"), pg.pct, key="total_return")
            ),
            pg.Tile("OOS Sharpe", pg.cell(summary.get("sharpe"), pg.num, key="sharpe")),
            pg.Tile(
                "OOS max drawdown", pg.cell(summary.get("max_drawdown"), pg.pct, key="max_drawdown")
            ),
            pg.Tile("Folds", pg.cell(len(folds), pg.integer, key="folds")),
            pg.Tile(
                f"Median OOS/IS {objective}",
                pg.cell(decay.get("median_ratio"), pg.num, key="median_ratio"),
            ),
            pg.Tile(
                "Fading",
                pg.Cell("yes" if decay.get("fading") else "no", None, "fading"),
                "the edge decays out of sample" if decay.get("fading") else "",
            ),
        ]
    )
    shade, shade_uses = _fold_shading(report, folds)
    blocks: list[pg.Block] = equity_chart(
        report,
        ts,
        eq,
        None,
        dd_for_points=dd,
        label="out of sample",
        title="Stitched out-of-sample equity",
        background=shade,
        background_uses=shade_uses,
    )
    blocks.append(
        pg.Note(
            "Each fold's test window is shaded; the curve chains the folds' OOS returns "
            "(bars an earlier fold covered are skipped), starting at 1."
        )
    )
    blocks += drawdown_chart(report, ts, dd, summary.get("max_drawdown"))
    report.sections = [
        pg.Section("Summary", [tiles], id="summary"),
        pg.Section("Out-of-sample equity", blocks, id="equity"),
        _decay_section(report, folds, decay, objective),
        _folds_section(folds, objective),
        monthly_section(report, ts, eq, base=STITCH_CAPITAL),
        rolling_section(report, ts, sr.returns_of(np.r_[STITCH_CAPITAL, eq]), ppy, 1),
        pg.Section(
            "Out-of-sample metrics",
            [
                pg.Table(
                    "metrics",
                    ["metric", "value"],
                    metric_rows(summary),
                    caption="metrics of the stitched OOS returns",
                )
            ],
        ),
        _regime_section(results.get("regime_checks") or {}),
    ]
    return report


def _fold_shading(
    report: pg.Report, folds: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[str]]:
    if not folds:
        return [], []
    even = [f for f in folds if int(f["index"]) % 2 == 0]  # alternate folds shaded
    report.datasets["fold_windows"] = {
        "start": [int(f["test"]["start_ts_unix"]) * 1000 for f in even],
        "end": [int(f["test"]["end_ts_unix"]) * 1000 for f in even],
        "fold": [int(f["index"]) for f in even],
    }
    layer = {
        "data": {"name": "fold_windows"},
        "mark": {"type": "rect", "color": "#e9eef6"},
        "encoding": {
            "x": {"field": "start", "type": "temporal", "scale": {"type": "utc"}},
            "x2": {"field": "end"},
            "tooltip": [{"field": "fold", "type": "quantitative", "title": "fold"}],
        },
    }
    return [layer], ["fold_windows"]


def _decay_section(
    report: pg.Report, folds: list[dict[str, Any]], decay: Mapping[str, Any], objective: str
) -> pg.Section:
    is_v = list(decay.get("is") or [])
    oos_v = list(decay.get("oos") or [])
    ratio = list(decay.get("oos_is_ratio") or [])
    n = min(len(folds), len(is_v), len(oos_v))
    report.datasets["decay"] = {
        "fold": list(range(n)),
        "is": pg.column(sr.as_float(is_v[:n])),
        "oos": pg.column(sr.as_float(oos_v[:n])),
        "ratio": pg.column(sr.as_float(ratio[:n])),
    }
    spec = ch.base(
        f"In-sample vs out-of-sample {objective} per fold",
        "the chosen parameters' score on the train window and on the following test window",
        height=200,
    )
    fold_x = {
        "field": "fold",
        "type": "ordinal",
        "scale": {"domain": list(range(n))},
        "axis": {"title": "fold", "labelAngle": 0},
    }
    spec["layer"] = [
        {
            "data": {"name": "decay"},
            "transform": [
                {"fold": ["is", "oos"], "as": ["key", "score"]},
                {"calculate": "datum.key == 'is' ? 'in sample' : 'out of sample'", "as": "sample"},
            ],
            "mark": {"type": "bar"},
            "encoding": {
                "x": fold_x,
                "xOffset": {"field": "sample", "sort": ["in sample", "out of sample"]},
                "y": ch.quant("score", objective, zero=True),
                "color": {
                    "field": "sample",
                    "type": "nominal",
                    "scale": {
                        "domain": ["in sample", "out of sample"],
                        "range": [ch.COLORS["is"], ch.COLORS["oos"]],
                    },
                    "legend": {"title": None},
                },
                "tooltip": [
                    {"field": "fold", "type": "ordinal"},
                    {"field": "sample", "type": "nominal"},
                    {"field": "score", "type": "quantitative", "format": ".3f"},
                ],
            },
        },
        ch.rule_at("y", 0.0),
    ]
    report.add_chart("decay", spec, ["decay"])

    threshold = _fading_ratio(str(decay.get("rule") or ""))
    ratio_spec = ch.base(
        f"OOS / IS {objective} ratio per fold",
        "median "
        + pg.num(decay.get("median_ratio"))
        + (f"; fading below {threshold:g}" if threshold is not None else ""),
        height=170,
    )
    layers: list[dict[str, Any]] = [
        {
            "data": {"name": "decay"},
            "mark": {"type": "bar", "color": ch.COLORS["oos"], "opacity": 0.85},
            "encoding": {
                "x": fold_x,
                "y": ch.quant("ratio", "OOS / IS"),
                "tooltip": [
                    {"field": "fold", "type": "ordinal"},
                    {"field": "ratio", "type": "quantitative", "format": ".3f"},
                ],
            },
        },
        ch.rule_at("y", 0.0),
    ]
    median = pg._finite(decay.get("median_ratio"))
    if median is not None:
        layers.append(ch.rule_at("y", median, color=ch.COLORS["vol"], strokeWidth=1.5))
    if threshold is not None:
        layers.append(ch.rule_at("y", threshold, color=ch.COLORS["var"], strokeDash=[5, 4]))
    ratio_spec["layer"] = layers
    report.add_chart("decay_ratio", ratio_spec, ["decay"])
    rows = [
        [
            pg.Cell("median OOS/IS ratio"),
            pg.cell(decay.get("median_ratio"), pg.num, key="median_ratio"),
        ],
        [
            pg.Cell(f"OOS {objective} slope per fold"),
            pg.cell(decay.get("oos_slope"), lambda v: pg.num(v, 4), key="oos_slope"),
        ],
        [
            pg.Cell("slope t-statistic"),
            pg.cell(decay.get("oos_slope_t"), pg.num, key="oos_slope_t"),
        ],
        [pg.Cell("fading"), pg.Cell("yes" if decay.get("fading") else "no", None, "fading")],
    ]
    return pg.Section(
        "Decay diagnostics",
        [
            pg.Chart("decay", ""),
            pg.Chart(
                "decay_ratio",
                "dashed red: the fading threshold; solid orange: the median ratio; no bar "
                "where the IS score is <= 0 (ratio undefined)",
            ),
            pg.Table("decay-summary", ["diagnostic", "value"], rows),
            pg.Note(str(decay.get("rule") or "")),
        ],
        id="decay",
    )


def _fading_ratio(rule: str) -> float | None:
    """The ratio threshold the run recorded in its rule text (``... ratio < 0.5 ...``)."""
    m = re.search(r"ratio < ([0-9]*\.?[0-9]+)", rule)
    return float(m.group(1)) if m else None


def _folds_section(folds: list[dict[str, Any]], objective: str) -> pg.Section:
    rows = []
    for f in folds:
        oos = f.get("oos_metrics") or {}
        ism = f.get("is_metrics") or {}
        params = f.get("chosen_params") or {}
        rows.append(
            [
                pg.cell(f.get("index"), pg.integer, key="fold"),
                pg.Cell(
                    f"{pg.utc(f['train']['start_ts_unix'], time=False)} → "
                    f"{pg.utc(f['train']['end_ts_unix'], time=False)}"
                ),
                pg.Cell(
                    f"{pg.utc(f['test']['start_ts_unix'], time=False)} → "
                    f"{pg.utc(f['test']['end_ts_unix'], time=False)}"
                ),
                pg.Cell(", ".join(f"{k}={v}" for k, v in params.items() if v not in (0, None))),
                pg.cell(ism.get(objective), pg.num, key=f"is_{objective}"),
                pg.cell(oos.get(objective), pg.num, key=f"oos_{objective}"),
                pg.cell(f.get("oos_is_ratio"), pg.num, key="oos_is_ratio"),
                pg.cell(oos.get("total_return"), pg.pct, key="oos_total_return"),
                pg.cell(oos.get("max_drawdown"), pg.pct, key="oos_max_drawdown"),
                pg.cell(f.get("oos_trades"), pg.integer, key="oos_trades"),
            ]
        )
    table = pg.Table(
        "folds",
        [
            "fold",
            "train",
            "test",
            "chosen parameters",
            f"IS {objective}",
            f"OOS {objective}",
            "OOS/IS",
            "OOS return",
            "OOS max DD",
            "OOS trades",
        ],
        rows,
        caption="per fold: the window the parameters were chosen on (train) and evaluated on "
        "(test); parameters at 0 are not listed",
        numeric_from=4,
    )
    return pg.Section("Per-fold metrics", [table], id="folds")


def _regime_section(checks: Mapping[str, Any]) -> pg.Section:
    """Per fold and regime: OOS bars / trades, flagged where the sample is too small."""
    flagged = list(checks.get("flagged") or [])
    per_fold = list(checks.get("per_fold") or [])
    columns: list[tuple[str, str]] = []
    for f in per_fold:
        for r in f.get("regimes", []):
            key = (str(r.get("kind")), str(r.get("regime")))
            if key not in columns and key[1] != "MISSING":
                columns.append(key)
    rows = []
    for f in per_fold:
        by = {(str(r.get("kind")), str(r.get("regime"))): r for r in f.get("regimes", [])}
        row = [pg.cell(f.get("fold"), pg.integer, key="fold")]
        for key in columns:
            r = by.get(key)
            if r is None or not r.get("bars"):
                row.append(pg.Cell("—"))
                continue
            small = bool(r.get("insufficient"))
            row.append(
                pg.Cell(
                    f"{int(r['bars']):,} / {int(r.get('trades', 0)):,}",
                    None,
                    f"{key[0]}_{key[1].lower()}",
                    "flag" if small else "",
                )
            )
        rows.append(row)
    total = sum(1 for f in per_fold for r in f.get("regimes", []) if r.get("bars", 0) > 0)
    blocks: list[pg.Block] = [
        pg.Note(
            f"{len(flagged)} of {total} (fold, regime) cells with data have fewer than "
            f"{checks.get('min_bars', '—')} OOS bars or {checks.get('min_trades', '—')} OOS "
            "trades (in orange): their per-regime figures are too small a sample to judge.",
            warn=bool(flagged),
        )
    ]
    if rows:
        blocks.append(
            pg.Table(
                "regime-checks",
                ["fold", *[f"{k} {r.lower()}" for k, r in columns]],
                rows,
                caption="OOS bars / OOS trades per fold and regime (vol: volatility regime; "
                "trend: trend regime, both known when the position was decided)",
            )
        )
    return pg.Section("Regime sample sizes", blocks, id="regimes")
