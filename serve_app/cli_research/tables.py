"""The readable tables of the research commands, drawn from the route's JSON answers (so the
table and ``--json`` can never disagree)."""

from __future__ import annotations

from typing import Any

from serve_app.cli_research.output import (
    BACKTEST_METRICS,
    count,
    day,
    find_again,
    line,
    metric_rows,
    num,
    params,
    pct,
    ratio,
    share,
    table,
    text,
)


def _data_line(data: dict[str, Any]) -> str:
    source = f", source {data['source']}" if data.get("source") else ""
    return (
        f"  data: {data.get('candles')} candles {day(data.get('first_ts'))} .. "
        f"{day(data.get('last_ts'))} (missing {data.get('missing_bars', 0)}, funding rows "
        f"{data.get('funding_rows', 0)}, fingerprint {data.get('fingerprint')}{source})"
    )


def _costs(request: dict[str, Any]) -> str:
    fee, slip = request.get("fee_bps", 10.0), request.get("slippage_bps", 0.0)
    sizing = request.get("sizing", "fixed")
    return f"  costs: fee {fee:g} bps, slippage {slip:g} bps per side; sizing {sizing}"


# ------------------------------------------------------------------------------ backtest
def backtest(resp: dict[str, Any], request: dict[str, Any]) -> None:
    """One backtest (``POST /backtest/run``'s answer)."""
    used = resp["used"]
    line(f"backtest {used['coin']} {used['interval']} {used['strategy']} {params(used['params'])}")
    line(_data_line(used["data"]))
    line(_costs(request))
    table(None, ["metric", "value"], metric_rows(resp["metrics"]))
    find_again("backtest", resp["run_id"])


def rerun(resp: dict[str, Any]) -> None:
    """``POST /backtest/runs/{id}/rerun``'s answer: same or not, and the new run."""
    new = resp["run"]
    verdict = "identical" if resp["identical"] else "NOT identical"
    line(
        f"rerun of {resp['original_id']} as {new['run_id']}: {verdict} (same data: "
        f"{_yes(resp['same_data'])}, same code: {_yes(resp['same_code'])}, equity identical: "
        f"{_yes(resp['equity_identical'])}, trades identical: {_yes(resp['trades_identical'])})"
    )
    if resp["differences"]:
        rows = [[d["metric"], _any(d["original"]), _any(d["rerun"])] for d in resp["differences"]]
        table("metrics that differ", ["metric", "original", "rerun"], rows)
    table(None, ["metric", "value"], metric_rows(new["metrics"]))
    find_again("backtest", new["run_id"])


def _yes(flag: Any) -> str:
    return "yes" if flag else "no"


def _any(x: Any) -> str:
    return num(x) if isinstance(x, float) else text(x)


# --------------------------------------------------------------------------- walkforward
def walkforward(resp: dict[str, Any], request: dict[str, Any]) -> None:
    """A walk-forward: a row per fold, then the stitched out-of-sample metrics."""
    used, objective = resp["used"], request.get("objective", "sharpe")
    searched = list(request.get("grid") or {})
    line(
        f"walk-forward {used['coin']} {used['interval']} {used['strategy']}: "
        f"{len(resp['folds'])} folds x {resp['grid_size']} parameter sets, chosen by "
        f"{objective} on each train window"
    )
    line(_data_line(used["data"]))
    rows = [
        [
            str(f["index"]),
            f"{day(f['train']['start_ts'])} .. {day(f['train']['end_ts'])}",
            f"{day(f['test']['start_ts'])} .. {day(f['test']['end_ts'])}",
            params({k: v for k, v in f["chosen_params"].items() if k in searched}),
            ratio(f["is_metrics"].get(objective)),
            pct(f["oos_metrics"].get("total_return")),
            ratio(f["oos_metrics"].get("sharpe")),
            pct(f["oos_metrics"].get("max_drawdown")),
            count(f["oos_trades"]),
            ratio(f["oos_is_ratio"]),
        ]
        for f in resp["folds"]
    ]
    heads = ["fold", "train", "test", "chosen", f"IS {objective}", "OOS return", "OOS Sharpe",
             "OOS max DD", "OOS trades", "OOS/IS"]  # fmt: skip
    table("folds", heads, rows)
    oos = resp["oos"]
    stitched = [*metric_rows(oos["metrics"]), ["bars", count(oos["bars"])],
                ["trades", count(oos["trades"])]]  # fmt: skip
    table("stitched out-of-sample", ["metric", "value"], stitched)
    decay = resp["decay"]
    line(
        f"decay: median OOS/IS {ratio(decay.get('median_ratio'))}, fading: "
        f"{_yes(decay.get('fading'))} ({decay.get('rule', '')})"
    )
    find_again("walkforward", resp["run_id"])


# ---------------------------------------------------------------------------- simulation
def _source_line(source: dict[str, Any]) -> str:
    kind = source.get("kind")
    if kind in ("backtest", "run"):
        of = f" of run {source['run_id']}" if kind == "run" else ""
        return (
            f"{source.get('coin')} {source.get('interval')} {source.get('strategy')} "
            f"{params(source.get('params'))}{of} ({source.get('returns')} returns)"
        )
    return f"{source.get('returns')} returns given"


def simulation(body: dict[str, Any]) -> None:
    """``POST /risk/simulate``'s answer: tail risk of the horizon return, drawdown
    percentiles, ruin and liquidation."""
    res, used = body["result"], body["used"]
    line(
        f"simulation: {used['paths']} paths x {used['horizon']} steps, {used['generator']}, "
        f"seed {used['seed']}; source {_source_line(used['source'])}"
    )
    hr, dd, term = res["horizon_return"], res["max_drawdown"], res["terminal_return"]
    tuw = res.get("time_under_water", {})
    rows = [
        ["VaR 95% (horizon return)", pct(hr.get("var_95"))],
        ["ES 95%", pct(hr.get("es_95"))],
        ["VaR 99%", pct(hr.get("var_99"))],
        ["ES 99%", pct(hr.get("es_99"))],
        ["max drawdown, median path", pct(dd.get("p50"))],
        ["max drawdown, worst 5% beyond", pct(dd.get("p5"))],
        ["max drawdown, mean", pct(dd.get("mean"))],
        [f"ruin probability (equity <= {used['ruin_threshold']:g})",
         share(res.get("ruin_probability"))],
        ["liquidation probability", share(res.get("liquidation_probability"))],
        ["terminal return, mean", pct(term.get("mean"))],
        ["terminal return, median", pct(term.get("p50"))],
        ["probability of a loss", share(term.get("prob_loss"))],
        ["time under water, median steps", count(tuw.get("median"))],
    ]  # fmt: skip
    table(None, ["statistic", "value"], rows)
    timings = body.get("timings") or {}
    if timings:
        line(
            f"  paths in {timings.get('paths_s', 0):.2f}s "
            f"({timings.get('path_steps_per_s', 0):,.0f} path-steps/s)"
        )
    find_again("simulation", body["run_id"])


# ---------------------------------------------------------------------------------- risk
_METHODS = (("historical", "hist"), ("normal", "normal"), ("cornish_fisher", "C-F"))


def _level_rows(levels: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [f"{lv['level']:g}"]
        + [pct(lv["var"].get(m)) for m, _ in _METHODS]
        + [pct(lv["es"].get(m)) for m, _ in _METHODS]
        for lv in levels
    ]


_LEVEL_HEADS = ["level"] + [f"VaR {s}" for _, s in _METHODS] + [f"ES {s}" for _, s in _METHODS]


def risk_report(body: dict[str, Any]) -> None:
    """``POST /risk/report``'s answer: VaR/ES per level and method for each series (one bar's
    return), and the portfolio's when weights were given."""
    line(
        f"risk report: {body['n_returns']} {body.get('interval') or ''} returns "
        f"{day(body.get('first_ts'))} .. {day(body.get('last_ts'))}; VaR/ES of one bar's "
        "return (historical, normal, Cornish-Fisher)"
    )
    for s in body["series"]:
        dd = s.get("drawdown", {})
        vt = s.get("vol_target", {})
        title = (
            f"{s['label']}: vol {share(s.get('vol_annualised'))} a year, max drawdown "
            f"{pct(dd.get('max'))}, vol-target scale {ratio(vt.get('next_scale'))}"
        )
        table(title, _LEVEL_HEADS, _level_rows(s["levels"]))
    portfolio = body.get("portfolio")
    if portfolio:
        weights = " ".join(f"{c}={w:g}" for c, w in portfolio["weights"].items())
        table(f"portfolio {weights}", _LEVEL_HEADS, _level_rows(portfolio["levels"]))


def correlation(body: dict[str, Any]) -> None:
    """``GET /risk/correlation``'s answer as a matrix."""
    line(
        f"{body['method']} correlation of {body['interval']} returns: {body['n_returns']} "
        f"aligned returns {day(body.get('first_ts'))} .. {day(body.get('last_ts'))} "
        f"({body['dropped_timestamps']} timestamps dropped)"
    )
    labels = body["labels"]
    rows = [
        [lab, *(ratio(v) for v in row)] for lab, row in zip(labels, body["matrix"], strict=True)
    ]
    table(None, ["", *labels], rows)


# ------------------------------------------------------------------------------ registry
def _short(run_id: str) -> str:
    return run_id[:8]


def _headline(m: dict[str, Any] | None, kind: str) -> list[str]:
    m = m or {}
    if kind == "simulation":
        return [pct(m.get("terminal_return_mean")), "-", pct(m.get("max_drawdown_p50"))]
    return [pct(m.get("total_return")), ratio(m.get("sharpe")), pct(m.get("max_drawdown"))]


def runs_page(page: dict[str, Any]) -> None:
    """``GET /runs``'s answer: one row per run."""
    rows = [
        [
            r["run_id"],
            r["kind"],
            r["status"],
            day(r["created_at"]),
            " ".join(x for x in (r.get("coin"), r.get("interval")) if x) or "-",
            text(r.get("strategy")),
            *_headline(r.get("metrics"), r["kind"]),
        ]
        for r in page["runs"]
    ]
    heads = ["run id", "kind", "status", "created", "series", "strategy", "return", "Sharpe",
             "max DD"]  # fmt: skip
    table(f"{page['total']} runs (showing {len(rows)} from {page['offset']})", heads, rows)
    if page.get("next_offset") is not None:
        line(f"more: --offset {page['next_offset']}")


_SIMULATION_SUMMARY = (
    ("paths", "paths", count),
    ("VaR 99% (horizon return)", "var_99", pct),
    ("ES 99%", "es_99", pct),
    ("max drawdown, median path", "max_drawdown_p50", pct),
    ("max drawdown, worst 5% beyond", "max_drawdown_p95", pct),
    ("ruin probability", "ruin_probability", share),
    ("liquidation probability", "liquidation_probability", share),
    ("terminal return, mean", "terminal_return_mean", pct),
)


def run_detail(run: dict[str, Any]) -> None:
    """``GET /runs/{id}``'s answer: what it was, how it went, its key numbers."""
    what = " ".join(x for x in (run.get("coin"), run.get("interval"), run.get("strategy")) if x)
    took = f", {run['duration_s']:.2f}s" if run.get("duration_s") is not None else ""
    line(f"run {run['run_id']}: {run['kind']} {what}, {run['status']}{took}")
    line(
        f"  created {run['created_at']}; data {text(run.get('data_fingerprint'))}; code "
        f"{text(run.get('code_version'))}"
        + (f"; rerun of {run['rerun_of']}" if run.get("rerun_of") else "")
    )
    request = run.get("request") or {}
    if request.get("params"):
        line(f"  params: {params(request['params'])}")
    progress = run.get("progress") or {}
    if run["status"] in ("queued", "running") and progress:
        line(f"  progress: {progress.get('done')}/{progress.get('total')} {progress.get('unit')}")
    if run.get("error"):
        line(f"  error: {run['error']}")
    metrics = run.get("metrics") or {}
    results = run.get("results") or {}
    if run["kind"] == "simulation" and "result" in results:
        simulation({"run_id": run["run_id"], **results})
        return
    if run["kind"] == "simulation":
        rows = metric_rows(metrics, _SIMULATION_SUMMARY)
    elif run["kind"] in ("backtest", "walkforward"):
        rows = metric_rows(metrics, BACKTEST_METRICS)
        if "folds" in metrics:
            rows += [["folds", count(metrics["folds"])], ["fading", _yes(metrics.get("fading"))]]
    else:
        rows = [[k, _any(v)] for k, v in metrics.items() if isinstance(v, int | float | str)]
    if rows:
        table(None, ["metric", "value"], rows)
    if run.get("trades_total") is not None:
        line(f"  trades stored: {run['trades_total']} (--json lists them)")
    line(f"GET /runs/{run['run_id']} serves the same run")


def comparison(c: dict[str, Any]) -> None:
    """``GET /backtest/compare``'s answer: key metrics side by side, what differs."""
    ids = [r["run_id"] for r in c["runs"]]
    values = {m["metric"]: m["values"] for m in c["metrics"]}
    rows = [
        [label, *(fmt(v) for v in values[key])]
        for label, key, fmt in BACKTEST_METRICS
        if key in values
    ]
    shown = {key for _, key, _ in BACKTEST_METRICS}
    rows += [[k, *(_any(v) for v in vs)] for k, vs in values.items() if k not in shown
             and k in ("folds", "paths", "var_99", "es_99", "ruin_probability")]  # fmt: skip
    for r in c["runs"]:
        what = " ".join(x for x in (r.get("coin"), r.get("interval"), r.get("strategy")) if x)
        line(f"{_short(r['run_id'])} = {r['run_id']} ({r['kind']} {what})")
    table(None, ["metric", *(_short(i) for i in ids)], rows)
    if c["param_diffs"]:
        diffs = [[d["field"], *(_any(v) for v in d["values"])] for d in c["param_diffs"]]
        table("request fields that differ", ["field", *(_short(i) for i in ids)], diffs)
    else:
        line("the requests are the same")
