"""Strategy plugin discovery: a plugin in a temporary package, found by module path and by an
entry point (a dist-info with entry_points.txt on sys.path), run through the backtest engine."""

from __future__ import annotations

import hashlib
import importlib
import pickle
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from compute.backtest.engine import BacktestConfig, run_backtest
from compute.backtest.plugins import BUILTINS
from serve_app.strategy_plugins import (
    ENTRY_POINT_GROUP,
    PluginError,
    describe_all,
    discover,
    load_module_path,
    spec_provenance,
)
from tests.compute.conftest import random_candles

PLUGIN_SOURCE = textwrap.dedent(
    '''
    """A third-party strategy package (written by the test)."""
    import numpy as np

    from compute.backtest.plugins import strategy
    from compute.indicators.registry import Param


    @strategy(name="{name}", version="2.1", warmup=lambda v: int(v["n"]),
              params=(Param("n", int, 10, 1, 500, "momentum lookback"),))
    def momentum(frame, params):
        """Long after n bars of gains, short after n bars of losses."""
        c, n = frame["close"], params["n"]
        past = np.concatenate([np.full(n, np.nan), c[:-n]])
        return np.where(np.isnan(past), 0.0, np.sign(c - past) * 0.5)


    PLUGINS = [momentum]
    '''
)


def write_package(root: Path, package: str, name: str) -> Path:
    pkg = root / package
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(PLUGIN_SOURCE.replace("{name}", name))
    return pkg / "__init__.py"


@pytest.fixture
def clean_modules() -> object:
    before = set(sys.modules)
    yield
    for mod in set(sys.modules) - before:
        if mod.startswith("acme_"):
            del sys.modules[mod]
    importlib.invalidate_caches()


def hand_momentum(close: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(close.size)
    for t in range(n, close.size):
        out[t] = 0.5 * np.sign(close[t] - close[t - n])
    return out


def test_a_plugin_found_by_module_path_is_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_modules: object
) -> None:
    source = write_package(tmp_path, "acme_strats", "acme_momentum")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = discover(["acme_strats:PLUGINS"], entry_points=False)
    assert set(found) == {*BUILTINS, "acme_momentum"}
    loaded = found["acme_momentum"]
    assert loaded.origin == "module" and loaded.module == "acme_strats"
    assert loaded.source_hash == hashlib.sha256(source.read_bytes()).hexdigest()
    assert loaded.provenance()["version"] == "2.1"
    d = random_candles(400, seed=7)
    pos = loaded.plugin.positions(d, {"n": 5})
    np.testing.assert_array_equal(pos, hand_momentum(d["close"], 5))
    res = run_backtest(d["ts"], d["open"], d["high"], d["low"], d["close"], pos, BacktestConfig())
    assert res.metrics["trades"] > 5 and set(np.unique(res.equity["position"])) == {-0.5, 0, 0.5}
    listed = {s["name"]: s for s in describe_all(found)}
    assert listed["acme_momentum"]["params"][0]["name"] == "n"
    assert listed["ema_cross"]["provenance"]["origin"] == "builtin"
    # a bare module path takes its module-level plugins; the plugin pickles by reference
    assert [p.name for p in load_module_path("acme_strats")] == ["acme_momentum"]
    again = pickle.loads(pickle.dumps(loaded.plugin))
    np.testing.assert_array_equal(again.positions(d, {"n": 5}), pos)


def test_a_plugin_found_by_entry_point_is_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_modules: object
) -> None:
    write_package(tmp_path, "acme_ep_strats", "acme_ep_momentum")
    info = tmp_path / "acme_ep_strats-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-ep-strats\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nmomentum = acme_ep_strats:PLUGINS\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    found = discover()
    loaded = found["acme_ep_momentum"]
    assert loaded.origin == "entry_point"
    assert loaded.source == "entry point acme-ep-strats: momentum = acme_ep_strats:PLUGINS"
    d = random_candles(300, seed=8)
    np.testing.assert_array_equal(loaded.plugin.positions(d), hand_momentum(d["close"], 10))


def test_clashing_and_broken_plugins_are_configuration_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_modules: object
) -> None:
    write_package(tmp_path, "acme_clash", "ema_cross")
    (tmp_path / "acme_empty.py").write_text("X = 1\n")
    (tmp_path / "acme_broken.py").write_text("import not_a_module_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match=r"'ema_cross' is claimed twice.*acme_clash:PLUGINS"):
        discover(["acme_clash:PLUGINS"], entry_points=False)
    with pytest.raises(PluginError, match="defines no strategy plugin"):
        load_module_path("acme_empty")
    with pytest.raises(PluginError, match=r"expected a strategy plugin.*got int"):
        load_module_path("acme_empty:X")
    with pytest.raises(PluginError, match="has no 'Y'"):
        load_module_path("acme_empty:Y")
    with pytest.raises(PluginError, match=r"cannot import 'acme_broken'.*PYTHONPATH"):
        load_module_path("acme_broken")


def test_spec_provenance_is_its_fingerprint() -> None:
    from compute.strategy.spec import parse_spec

    spec = parse_spec({"name": "trend", "long_entry": "ema:12 > ema:26"})
    prov = spec_provenance(spec)
    assert prov["origin"] == "spec" and prov["source_hash"] == spec.fingerprint()
    assert prov["source"] == '{"long_entry":"ema:12 > ema:26","name":"trend"}'
