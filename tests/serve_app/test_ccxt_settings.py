"""``SQUALL_*`` variables for the ccxt data source, through ``Settings`` to the provider."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError

from ingestion.config import build_provider
from ingestion.providers.ccxt_provider import CcxtProvider
from serve_app.settings import Settings, ingest_config
from storage.errors import ConfigurationError


def test_environment_reaches_the_ccxt_exchange(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQUALL_DATA_SOURCE", "ccxt")
    monkeypatch.setenv("SQUALL_CCXT_EXCHANGE", "binance")
    monkeypatch.setenv("SQUALL_CCXT_MARKET", "swap")
    monkeypatch.setenv(
        "SQUALL_CCXT_URLS",
        '{"fapiPublic": "http://127.0.0.1:9/fapi/v1", "public": "http://127.0.0.1:9/api/v3"}',
    )
    monkeypatch.setenv("SQUALL_CCXT_TIMEOUT_S", "2.5")
    monkeypatch.setenv("SQUALL_CCXT_RATE_LIMIT_MS", "7")
    monkeypatch.setenv("SQUALL_QUOTE_ASSET", "USDC")
    provider = build_provider(ingest_config(Settings()))
    assert isinstance(provider, CcxtProvider)
    api = provider.exchange.urls["api"]
    assert api["fapiPublic"] == "http://127.0.0.1:9/fapi/v1"
    assert api["public"] == "http://127.0.0.1:9/api/v3"
    assert api["fapiData"] == "https://fapi.binance.com/futures/data"  # untouched entries
    assert provider.exchange.timeout == 2500 and provider.exchange.rateLimit == 7
    assert provider.market == "swap" and provider.symbol("btc") == "BTC/USDC:USDC"
    assert provider.name == "ccxt:binance"
    provider.close()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SQUALL_CCXT_MARKET", "future"),
        ("SQUALL_CCXT_URLS", "not json"),
        ("SQUALL_CCXT_EXCHANGE", "Bin ance"),
        ("SQUALL_CCXT_RATE_LIMIT_MS", "0"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises((ValidationError, ValueError), match=name.removeprefix("SQUALL_").lower()):
        Settings()


def test_unknown_exchange_or_url_key_fails_when_the_provider_is_built() -> None:
    config = ingest_config(Settings(data_source="ccxt", ccxt_exchange="nopex"))
    with pytest.raises(ConfigurationError, match="ccxt has no exchange 'nopex'"):
        build_provider(config)
    config = dataclasses.replace(config, ccxt_exchange="binance", ccxt_urls={"spot": "http://x"})
    with pytest.raises(ConfigurationError, match="no api url spot"):
        build_provider(config)
