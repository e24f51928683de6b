"""The strategy union in request models and sweeps: old bodies keep their canonical form and
hash; sweep specs take declarative specs and plugins, validated before submission, and a spec
grid takes the fused kernel with the engine's numbers."""

from __future__ import annotations

import hashlib
import sys
import textwrap
from pathlib import Path

import numpy as np
import orjson
import pytest

from serve_app.services.provenance import canonical_request, request_hash
from serve_app.services.requests.backtest import BacktestRunRequest, SpecStrategy
from serve_app.services.strategy import clear_catalogue
from serve_app.services.sweep import expand, parse_spec
from serve_app.settings import Settings
from storage.errors import ConfigurationError
from tests.serve_app.factories import HOUR, T0

OLD_DEFAULTS = {  # a backtest body's canonical JSON before strategies became a union
    "fee_bps": 10.0, "slippage_bps": 0.0, "slippage_range_frac": 0.0, "funding": True,
    "sizing": "fixed", "fraction": 1.0, "target_vol": 0.2, "vol_lookback": 30,
    "max_leverage": 1.0, "seed": 0, "coin": "BTC", "interval": "1h", "start": None,
    "end": None, "strategy": "ema_cross", "params": {"fast": 12}, "equity_points": 1000,
    "max_trades": 1000, "mode": "sync",
}  # fmt: skip


def test_an_old_style_body_keeps_its_canonical_form_and_hash() -> None:
    req = BacktestRunRequest.model_validate(
        {"coin": "BTC", "interval": "1h", "strategy": "ema_cross", "params": {"fast": 12}}
    )
    assert canonical_request(req) == OLD_DEFAULTS
    raw = orjson.dumps(OLD_DEFAULTS, option=orjson.OPT_SORT_KEYS)
    assert request_hash(req) == hashlib.sha256(raw).hexdigest()
    flagged = req.model_copy(update={"lookahead": "flag"})
    assert canonical_request(flagged) == {**OLD_DEFAULTS, "lookahead": "flag"}
    spec = BacktestRunRequest.model_validate(
        {**OLD_DEFAULTS, "strategy": {"spec": {"long_entry": "close > 1"}}}
    )
    assert isinstance(spec.strategy, SpecStrategy)
    assert canonical_request(spec)["strategy"] == {"spec": {"long_entry": "close > 1"},
                                                   "params": {}}  # fmt: skip
    # what the registry stores reads back as the same request
    assert BacktestRunRequest.model_validate(canonical_request(spec)) == spec


SWEEP = """\
name: specs
coins: [BTC]
intervals: [1h]
strategies:
  ema_cross: {fast: [3, 5], slow: [10]}
  trend:
    spec: {long_entry: "ema:{fast} > ema:{slow}", long_exit: "ema:{fast} <= ema:{slow}"}
    grid: {fast: [3, 5], slow: [10, 20]}
  rsi:
    name: rsi_mr
    params: {n: 9}
"""


def test_a_sweep_spec_takes_specs_and_named_strategies() -> None:
    spec = parse_spec(SWEEP)
    assert "lookahead" not in canonical_request(spec)  # old sweep specs hash as before
    units = expand(spec)
    assert [(u.strategy, len(u.combos)) for u in units] == [
        ("ema_cross", 2), ("trend", 4), ("rsi", 1)
    ]  # fmt: skip
    assert units[1].combos[0] == {"fast": 3, "slow": 10}
    assert units[2].combos[0]["n"] == 9 and units[2].resolved.ref.name == "rsi_mr"
    bad = SWEEP.replace("ema:{fast} > ema", "ema:{fast} > emaa")
    with pytest.raises(ConfigurationError, match="emaa") as err:
        expand(parse_spec(bad))
    assert err.value.code == "invalid_strategy" and err.value.extra["token"] == "emaa"
    with pytest.raises(ConfigurationError, match="not placeholders") as err:
        expand(parse_spec(SWEEP.replace("grid: {fast", "grid: {fastest")))
    assert err.value.extra["field"] == "grid"


def test_a_long_flat_spec_grid_takes_the_fused_kernel_with_the_engines_numbers() -> None:
    from compute.backtest.engine import run_backtest
    from compute.strategy.compiler import spec_positions
    from serve_app.services.backtest import engine_config
    from serve_app.services.inputs import SeriesData
    from serve_app.services.requests.backtest import CostsAndSizing
    from serve_app.services.sweep_job import _grid_rows, _spec_fast_path

    n = 12_000
    rng = np.random.default_rng(4)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, n)))
    col = {"open": np.r_[100.0, close[:-1]], "close": close}
    col["high"] = np.maximum(col["open"], close) * 1.001
    col["low"] = np.minimum(col["open"], close) * 0.999
    ts = T0 + np.arange(n, dtype=np.int64) * HOUR
    data = SeriesData("BTC", "1h", ts, col["open"], col["high"], col["low"], col["close"],
                      np.ones(n), None, 0, "x", 0)  # fmt: skip
    unit = expand(parse_spec(SWEEP))[1]
    config = engine_config(CostsAndSizing(fee_bps=7, slippage_bps=3), "1h")
    assert _spec_fast_path(data, unit, config)
    rows = _grid_rows(data, unit, config)
    spec = unit.resolved.plugin.spec
    for row, params in zip(rows, unit.combos, strict=True):
        pos = spec_positions(spec, col, params).positions
        want = run_backtest(ts, col["open"], col["high"], col["low"], col["close"], pos, config)
        for key in ("total_return", "sharpe", "max_drawdown", "trades"):
            assert row[key] == pytest.approx(want.metrics[key], rel=1e-8, abs=1e-12), key
    # the same grid as the built-in long-only EMA crossing: the same trades
    builtin = _grid_rows(
        data,
        expand(parse_spec(SWEEP.replace("slow: [10]}", "slow: [10, 20], long_only: [1]}")))[0],
        config,
    )
    by = {(r["params"]["fast"], r["params"]["slow"]): r for r in builtin}
    for row in rows:
        twin = by[(row["params"]["fast"], row["params"]["slow"])]
        assert row["trades"] == twin["trades"]
        assert row["total_return"] == pytest.approx(twin["total_return"], rel=1e-9)


def test_sweep_units_check_user_strategies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from serve_app.services.inputs import SeriesData
    from serve_app.services.sweep_job import _checks

    (tmp_path / "wire_sweep_strats.py").write_text(textwrap.dedent('''
        import numpy as np
        from compute.backtest.plugins import strategy

        @strategy(name="sweep_peek")
        def sweep_peek(frame, params):
            c = frame["close"]
            return np.where(np.roll(c, -1) > c, 1.0, 0.0)
        '''))  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    clear_catalogue()
    try:
        settings = Settings(strategy_modules=["wire_sweep_strats"])
        text = SWEEP.split("strategies:", maxsplit=1)[0] + "strategies:\n  sweep_peek: {}\n"
        unit = expand(parse_spec(text), settings)[0]
        rng = np.random.default_rng(1)
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 500)))
        ts = T0 + np.arange(500, dtype=np.int64) * HOUR
        data = SeriesData("BTC", "1h", ts, close, close * 1.01, close * 0.99, close,
                          np.ones(500), None, 0, "x", 0)  # fmt: skip
        with pytest.raises(ConfigurationError, match="reads the future"):
            _checks(data, unit, parse_spec(text))
        flagged = _checks(data, unit, parse_spec(text + "lookahead: flag\n"))
        assert flagged is not None and flagged["passed"] is False
    finally:
        sys.modules.pop("wire_sweep_strats", None)
        clear_catalogue()


def test_the_registry_takes_portfolio_runs_on_both_backends(database_url: str) -> None:
    from storage.engine import make_engine, session_factory, transaction
    from storage.runs import RunFilter, RunRepository

    engine = make_engine(database_url)
    try:
        sessions = session_factory(engine)
        with transaction(sessions) as session:
            run_id = RunRepository(session).add(
                "portfolio", {"coins": ["BTC", "ETH"]}, request_hash="h", code_version="c"
            )
        with sessions() as session:
            assert RunRepository(session).count(RunFilter(kind="portfolio")) >= 1
            got = RunRepository(session).get(run_id)
            assert got is not None and got.kind == "portfolio"
    finally:
        engine.dispose()
