"""Strategy specs and plugins through the API, on the real BTC / ETH / SOL daily files.

* a declarative spec equal to ``ema_cross`` 12/26 answers bit-identical positions, equity,
  trades and metrics to the built-in, through ``/backtest/run``, ``POST /signals`` and
  ``/backtest/walkforward`` (with a grid of placeholders); the positions equal a NumPy
  reference EMA crossing computed here;
* bad specs are 422s naming the field, the token, its position and what is valid, on every
  route that takes a strategy;
* a plugin (temporary package, module-path setting) that reads the next bar
  (``np.roll(close, -1)``) is caught by the look-ahead check: rejected with the first bar
  that changed, or run and flagged; one that remembers its first bar is caught by the
  recursion check; the check and the provenance are stored with the run;
* the registry: compare shows spec text differences, rerun is bit-identical.
"""

from __future__ import annotations

import hashlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from compute.indicators.reference import ema
from ingestion.fileimport import parse_candle_file
from serve_app.api import create_app
from serve_app.services import strategy as strategy_service
from serve_app.settings import Settings
from storage.candles import CandleRepository
from storage.engine import make_engine, session_factory, transaction
from storage.migrate import upgrade

pytestmark = pytest.mark.realdata
COINS = {"BTC": "BTCUSDT", "ETH": "ETHUSDT", "SOL": "SOLUSDT"}
EMA_SPEC = {
    "name": "ema cross",
    "long_entry": "ema:12 > ema:26",
    "long_exit": "ema:12 <= ema:26",
    "short_entry": "ema:12 < ema:26",
    "short_exit": "ema:12 >= ema:26",
}
PLUGINS = textwrap.dedent(
    '''
    """Strategies written by the test: one that peeks at the next bar, one that remembers
    the highest close since its first bar."""
    import numpy as np

    from compute.backtest.plugins import strategy
    from compute.indicators.registry import Param


    @strategy(name="peek_next", version="0.1")
    def peek_next(frame, params):
        """Long when the next close is higher: reads the future."""
        c = frame["close"]
        return np.where(np.roll(c, -1) > c, 1.0, 0.0)


    @strategy(name="near_top", version="0.1")
    def near_top(frame, params):
        """Long within 20 % of the highest close since the first bar: start-dependent."""
        c = frame["close"]
        return np.where(c >= 0.8 * np.maximum.accumulate(c), 1.0, 0.0)


    @strategy(name="momo", version="2.0", warmup=lambda v: int(v["n"]),
              params=(Param("n", int, 20, 1, 500, "lookback"),))
    def momo(frame, params):
        """Half long after n bars of gains: causal."""
        c, n = frame["close"], params["n"]
        past = np.concatenate([np.full(n, np.nan), c[:-n]])
        return np.where(np.isnan(past), 0.0, (c > past) * 0.5)


    PLUGINS = [peek_next, near_top, momo]
    '''
)


def real(shared_data: Path, pair: str) -> Any:
    path = next(shared_data.glob(f"binance_spot_{pair}_1d_*.csv"))
    return parse_candle_file(path, coin=pair[:-4], interval="1d").frame


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("plugins")
    (root / "wire_test_strats").mkdir()
    source = root / "wire_test_strats" / "__init__.py"
    source.write_text(PLUGINS)
    sys.path.insert(0, str(root))
    strategy_service.clear_catalogue()
    yield source
    sys.path.remove(str(root))
    for name in [m for m in sys.modules if m.startswith("wire_test_strats")]:
        del sys.modules[name]
    strategy_service.clear_catalogue()


@pytest.fixture(scope="module")
def client(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory, plugin_dir: Path
) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path_factory.mktemp('strategies') / 'squall.db'}"
    upgrade(url)
    engine = make_engine(url)
    with transaction(session_factory(engine)) as session:
        for pair in COINS.values():
            CandleRepository(session).upsert(real(shared_data, pair))
    engine.dispose()
    settings = Settings(
        database_url=url,
        coins=list(COINS),
        intervals=["1d"],
        ingest_enabled=False,
        log_level="WARNING",
        strategy_modules=["wire_test_strats:PLUGINS"],
    )
    with TestClient(create_app(settings, configure_logs=False)) as c:
        yield c


def run(client: TestClient, **body: Any) -> dict[str, Any]:
    r = client.post("/backtest/run", json={"coin": "BTC", "interval": "1d", **body})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


# ------------------------------------------------------------------------ spec == built-in
def test_a_spec_equal_to_ema_cross_is_bit_identical_through_the_api(
    client: TestClient, shared_data: Path
) -> None:
    every = {"equity_points": 100_000, "max_trades": 100_000}
    built = run(client, strategy="ema_cross", params={"fast": 12, "slow": 26}, **every)
    spec = run(client, strategy={"spec": EMA_SPEC}, **every)
    assert spec["equity"]["position"] == built["equity"]["position"]
    assert spec["equity"]["equity"] == built["equity"]["equity"]
    assert spec["trades"] == built["trades"] and spec["metrics"] == built["metrics"]
    assert len(spec["equity"]["equity"]) == spec["used"]["data"]["candles"] > 3000
    # the positions: +1 / -1 by the EMA(12) vs EMA(26) crossing, flat in EMA(26)'s warm-up,
    # each applied over the bar after its decision (a NumPy reference EMA, not the kernels)
    close = real(shared_data, "BTCUSDT")["close"].to_numpy()
    fast, slow = ema(close, 12), ema(close, 26)
    decided = np.where(np.isnan(slow), 0.0, np.sign(fast - slow))
    assert np.isnan(slow[24]) and not np.isnan(slow[25])
    np.testing.assert_array_equal(spec["equity"]["position"][1:], decided[:-1])
    # the registry has the spec's provenance and its passed check
    used = spec["used"]
    assert used["strategy"] == "spec:ema cross" and used["warmup_bars"] == 25
    assert used["provenance"]["origin"] == "spec"
    canonical = used["provenance"]["source"]
    assert used["provenance"]["source_hash"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert used["checks"]["passed"] is True and used["checks"]["policy"] == "reject"
    assert built["used"]["checks"] is None and built["used"]["provenance"]["origin"] == "builtin"
    stored = client.get(f"/runs/{spec['run_id']}").json()
    assert stored["strategy"] == "spec:ema cross"
    assert stored["results"]["used"]["checks"]["lookahead"]["flagged"] is False
    # POST /signals: the same weights as GET /signals' registry signal, bar by bar
    got = client.post(
        "/signals",
        json={"coin": "BTC", "interval": "1d", "strategy": {"spec": EMA_SPEC}, "limit": 400},
    )
    assert got.status_code == 200, got.text
    ref = client.get("/signals?coin=BTC&interval=1d&strategy=ema_cross&params=12:26&limit=400")
    assert [r["position"] for r in got.json()["rows"]] == [
        float(r["position"]) for r in ref.json()["rows"]
    ]
    assert got.json()["checks"]["passed"] is True
    # seeded where the candles it read start (the warm-up before the window), as /indicators
    ts = real(shared_data, "BTCUSDT")["ts"].to_numpy()
    used = close[ts >= got.json()["data"]["first_ts_unix"]]
    assert got.json()["data"]["candles"] == used.size == 400 + 25
    seeded = np.where(np.isnan(ema(used, 26)), 0.0, np.sign(ema(used, 12) - ema(used, 26)))
    np.testing.assert_array_equal([r["position"] for r in got.json()["rows"]], seeded[25:])


def test_spec_warmup_keeps_insufficient_data_exact(client: TestClient) -> None:
    spec = {"long_entry": "ema:12 > ema:26 and rsi:14 < 70"}  # 25 + 2 = 27 candles
    first = 1_502_928_000  # 2017-08-17, the first BTC bar
    end = first + 25 * 86_400  # 26 candles
    short = client.post(
        "/backtest/run",
        json={"coin": "BTC", "interval": "1d", "strategy": {"spec": spec}, "end": end},
    )
    assert short.status_code == 422
    err = short.json()
    assert err["error"] == "insufficient_data"
    assert (err["required_candles"], err["received_candles"]) == (27, 26)
    ok = run(client, strategy={"spec": spec}, end=end + 86_400)
    assert ok["used"]["data"]["candles"] == 27 and ok["used"]["warmup_bars"] == 25


def test_a_walkforward_over_spec_placeholders_equals_the_built_in_grid(client: TestClient) -> None:
    spec = {k: v.replace("12", "{fast}").replace("26", "{slow}") for k, v in EMA_SPEC.items()}
    body = {"coin": "BTC", "interval": "1d", "grid": {"fast": [5, 12], "slow": [26, 50]},
            "train_bars": 730, "test_bars": 180}  # fmt: skip
    a = client.post("/backtest/walkforward", json={**body, "strategy": "ema_cross"})
    b = client.post("/backtest/walkforward", json={**body, "strategy": {"spec": spec}})
    assert a.status_code == 200 and b.status_code == 200, b.text
    fa, fb = a.json()["folds"], b.json()["folds"]
    assert [f["chosen_params"]["fast"] for f in fa] == [f["chosen_params"]["fast"] for f in fb]
    assert [f["oos_metrics"] for f in fa] == [f["oos_metrics"] for f in fb]
    assert a.json()["oos"]["equity"]["equity"] == b.json()["oos"]["equity"]["equity"]
    assert b.json()["used"]["checks"]["passed"] is True
    bad = client.post(
        "/backtest/walkforward", json={**body, "strategy": {"spec": spec}, "grid": {"fastest": [1]}}
    )
    assert bad.status_code == 422
    assert (bad.json()["field"], bad.json()["token"]) == ("grid", "fastest")
    assert bad.json()["valid"] == ["fast", "slow"]


# ----------------------------------------------------------------------------- bad specs
@pytest.mark.parametrize(
    ("spec", "field", "token", "position"),
    [
        ({"long_entry": "ema:12 > emaa:26"}, "long_entry", "emaa", 9),
        ({"long_entry": "ema:12 > ema:26 & rsi < 70"}, "long_entry", "&", 16),
        ({"long_entry": "ema:0 > close"}, "long_entry", "0", 4),
        ({"long_entry": "close > close[-1]"}, "long_entry", "-", 14),
        ({"long_entry": "close > 1", "stop_loss": {"pct": 1.5}}, "stop_loss.pct", "1.5", 0),
        ({"long_entry": "close > 1", "colour": "red"}, "colour", "colour", 0),
    ],
)
def test_bad_specs_are_422s_naming_the_token(
    client: TestClient, spec: dict[str, Any], field: str, token: str, position: int
) -> None:
    strategy = {"spec": spec}
    calls = [
        ("/backtest/run", {"coin": "BTC", "interval": "1d", "strategy": strategy}),
        ("/signals", {"coin": "BTC", "interval": "1d", "strategy": strategy}),
        ("/backtest/walkforward", {"coin": "BTC", "interval": "1d", "strategy": strategy,
                                   "grid": {"x": [1]}, "train_bars": 100, "test_bars": 50}),
        ("/risk/simulate", {"backtest": {"coin": "BTC", "interval": "1d", "strategy": strategy}}),
    ]  # fmt: skip
    for url, body in calls:
        r = client.post(url, json=body)
        assert r.status_code == 422, (url, r.text)
        err = r.json()
        assert err["error"] == "invalid_strategy", (url, err)
        assert (err["field"], err["token"], err["position"]) == (field, token, position), url
        assert isinstance(err["valid"], list) and token in err["message"]
    first = client.post(calls[0][0], json=calls[0][1]).json()
    if token == "emaa":
        assert "ema" in first["valid"] and "rsi" in first["valid"]
    if token == "-":  # the next bar: refused as look-ahead by the grammar itself
        assert "future" in first["message"]


def test_unknown_names_list_builtins_and_plugins(client: TestClient) -> None:
    r = client.post("/backtest/run", json={"coin": "BTC", "interval": "1d", "strategy": "moon"})
    assert r.status_code == 422 and r.json()["error"] == "unknown_strategy"
    names = [v["name"] for v in r.json()["valid"]]
    assert {"ema_cross", "peek_next", "near_top", "momo"} <= set(names)
    both = client.post(
        "/backtest/run",
        json={"coin": "BTC", "interval": "1d", "strategy": {"name": "rsi_mr", "params": {"n": 9}},
              "params": {"n": 10}},
    )  # fmt: skip
    assert both.status_code == 422 and "twice" in both.json()["message"]


# ------------------------------------------------------------------ look-ahead and plugins
def test_strategies_lists_plugins_with_provenance(client: TestClient, plugin_dir: Path) -> None:
    r = client.get("/strategies")
    assert r.status_code == 200
    listed = {s["name"]: s for s in r.json()["strategies"]}
    assert {"buy_and_hold", "ema_cross", "rsi_mr", "bb_break", "peek_next", "near_top"} <= set(
        listed
    )
    peek = listed["peek_next"]
    assert peek["version"] == "0.1" and peek["provenance"]["origin"] == "module"
    assert peek["provenance"]["source"] == "wire_test_strats:PLUGINS"
    digest = hashlib.sha256(plugin_dir.read_bytes()).hexdigest()
    assert peek["provenance"]["source_hash"] == digest
    fast = next(p for p in listed["ema_cross"]["params"] if p["name"] == "fast")
    assert fast["default"] == 12 and fast["type"] == "int"
    assert r.json()["modules"] == ["wire_test_strats:PLUGINS"] and "spec" in r.json()["specs"]


def test_a_plugin_reading_the_next_bar_is_rejected_or_flagged(
    client: TestClient, shared_data: Path
) -> None:
    r = client.post(
        "/backtest/run", json={"coin": "BTC", "interval": "1d", "strategy": "peek_next"}
    )
    assert r.status_code == 422
    err = r.json()
    assert err["error"] == "lookahead_detected" and "reads the future" in err["message"]
    close = real(shared_data, "BTCUSDT")["close"].to_numpy()
    bar = err["first_bar"]
    # the cut ended just after that bar: np.roll wrapped the first close into its position
    assert err["cut"] == bar + 1
    assert (close[0] > close[bar]) != (close[bar + 1] > close[bar])
    assert err["first_bar_ts_unix"] == int(real(shared_data, "BTCUSDT")["ts"].iloc[bar])
    assert err["check"]["passed"] is False
    flagged = run(client, strategy="peek_next", lookahead="flag")
    assert flagged["used"]["checks"]["passed"] is False
    assert flagged["used"]["checks"]["lookahead"]["first_bar"] == bar
    assert flagged["used"]["checks"]["policy"] == "flag"
    assert flagged["metrics"]["sharpe"] > 5  # knowing tomorrow is lucrative
    stored = client.get(f"/runs/{flagged['run_id']}").json()["results"]["used"]
    assert stored["checks"]["lookahead"]["flagged"] is True
    assert stored["provenance"]["name"] == "peek_next"
    # every route that runs a strategy checks it
    sim = client.post("/risk/simulate", json={"backtest": {"coin": "BTC", "interval": "1d",
                                                            "strategy": "peek_next"}})  # fmt: skip
    assert sim.status_code == 422 and sim.json()["error"] == "lookahead_detected"
    sig = client.post("/signals", json={"coin": "BTC", "interval": "1d", "strategy": "peek_next"})
    assert sig.status_code == 422 and sig.json()["error"] == "lookahead_detected"


def test_a_plugin_is_usable_by_name_in_every_route(client: TestClient, shared_data: Path) -> None:
    strategy = {"name": "momo", "params": {"n": 10}}
    series = {"coin": "BTC", "interval": "1d"}
    bt = run(client, strategy=strategy, fee_bps=0, funding=False, equity_points=100_000)
    assert bt["used"]["provenance"]["version"] == "2.0" and bt["used"]["checks"]["passed"]
    close = real(shared_data, "BTCUSDT")["close"].to_numpy()
    held = np.r_[0.0, np.where(np.arange(close.size) >= 10, (close > np.roll(close, 10)) * 0.5,
                               0.0)[:-1]]  # fmt: skip
    np.testing.assert_array_equal(bt["equity"]["position"], held)
    calls = [
        ("/backtest/walkforward", {**series, "strategy": "momo", "grid": {"n": [5, 20]},
                                   "train_bars": 730, "test_bars": 365}),
        ("/signals", {**series, "strategy": strategy, "limit": 50}),
        ("/risk/simulate", {"backtest": {**series, "strategy": strategy}, "horizon": 30,
                            "paths": 2000}),
        ("/backtest/portfolio", {"coins": ["BTC", "ETH"], "interval": "1d",
                                 "strategy": {"per_coin": {"BTC": strategy, "ETH": "momo"}}}),
    ]  # fmt: skip
    for url, body in calls:
        r = client.post(url, json=body)
        assert r.status_code == 200, (url, r.text)
    folio = r.json()
    assert folio["used"]["provenance"]["ETH"]["name"] == "momo"
    assert folio["used"]["rule"]["per_coin"]["ETH"]["params"] == {"n": 20}


def test_a_plugin_remembering_its_first_bar_is_caught_by_the_recursion_check(
    client: TestClient,
) -> None:
    r = client.post("/backtest/run", json={"coin": "BTC", "interval": "1d", "strategy": "near_top"})
    assert r.status_code == 422
    err = r.json()
    assert err["error"] == "recursion_detected"
    rec = err["check"]["recursion"]
    assert rec["flagged"] is True and rec["share"] > rec["tolerance"]
    assert err["check"]["lookahead"]["flagged"] is False
    flagged = run(client, strategy="near_top", lookahead="flag")
    assert flagged["used"]["checks"]["recursion"]["flagged"] is True


# -------------------------------------------------------------------------------- registry
def test_compare_names_spec_differences_and_rerun_is_identical(client: TestClient) -> None:
    a = run(client, strategy={"spec": EMA_SPEC})
    b = run(client, strategy={"spec": {**EMA_SPEC, "long_entry": "ema:12 > ema:26 and rsi < 80"}})
    cmp = client.get(f"/backtest/compare?ids={a['run_id']},{b['run_id']}").json()
    diffs = {d["field"]: d["values"] for d in cmp["param_diffs"]}
    assert diffs["strategy.spec.long_entry"] == [
        "ema:12 > ema:26", "ema:12 > ema:26 and rsi < 80"
    ]  # fmt: skip
    assert "strategy_provenance.source_hash" in diffs
    again = client.post(f"/backtest/runs/{b['run_id']}/rerun").json()
    assert again["identical"] is True and again["same_strategy"] is True
    assert again["run"]["equity"] == b["equity"]
