"""What the ingestion supervisor needs to know, as one picklable value, and provider choice.

``ingestion`` may not import ``serve_app``: the composition root builds an ``IngestConfig``
from its settings and hands it over.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ingestion.providers.base import Provider
from storage.errors import ConfigurationError


@dataclass(frozen=True)
class IngestConfig:
    database_url: str
    coins: tuple[str, ...]
    intervals: tuple[str, ...]
    data_source: str = "synthetic"
    quote_asset: str = "USDT"
    #: how far back an empty series is filled on first start
    backfill_days: float = 90.0
    #: bars re-fetched before the cursor each run (harmless: upserts are idempotent)
    overlap_bars: int = 2
    #: seconds after an interval closes before it counts as late
    grace_s: float = 90.0
    #: how often the per-coin snapshot / funding / open-interest job runs
    derivatives_period_s: float = 60.0
    #: delay after a bar closes before fetching it (exchanges publish with a lag)
    fetch_delay_s: float = 2.0
    #: retry delay after a failed run, doubled per consecutive failure, capped by the period
    retry_base_s: float = 2.0
    #: how often a standby supervisor retries the writer lock
    standby_retry_s: float = 5.0
    synthetic_seed: int = 7
    binance_spot_url: str = "https://api.binance.com"
    binance_futures_url: str = "https://fapi.binance.com"
    binance_timeout_s: float = 10.0
    binance_requests_per_second: float = 10.0
    #: ccxt exchange id (``ccxt.exchanges``), candle market and ``urls['api']`` overrides
    ccxt_exchange: str = "binance"
    ccxt_market: str = "spot"
    ccxt_urls: dict[str, str] = field(default_factory=dict)
    ccxt_timeout_s: float = 10.0
    #: ms between requests for ccxt's limiter; None: the exchange's own figure
    ccxt_rate_limit_ms: float | None = None
    extra: dict[str, str] = field(default_factory=dict)


def build_provider(config: IngestConfig) -> Provider:
    """The provider named by ``config.data_source``."""
    if config.data_source == "synthetic":
        from ingestion.providers.synthetic import SyntheticProvider

        history = max(1, int(config.backfill_days) + 1)
        return SyntheticProvider(seed=config.synthetic_seed, history_days=history)
    if config.data_source == "binance":
        from ingestion.providers.binance import BinanceProvider

        return BinanceProvider(
            spot_base_url=config.binance_spot_url,
            futures_base_url=config.binance_futures_url,
            quote_asset=config.quote_asset,
            timeout_s=config.binance_timeout_s,
            requests_per_second=config.binance_requests_per_second,
        )
    if config.data_source == "ccxt":
        from ingestion.providers.ccxt_provider import CcxtProvider

        if config.ccxt_market not in ("spot", "swap"):
            raise ConfigurationError(
                f"ccxt market must be 'spot' or 'swap', got {config.ccxt_market!r}"
            )
        return CcxtProvider(
            config.ccxt_exchange,
            quote_asset=config.quote_asset,
            market="spot" if config.ccxt_market == "spot" else "swap",
            urls=config.ccxt_urls,
            timeout_s=config.ccxt_timeout_s,
            rate_limit_ms=config.ccxt_rate_limit_ms,
        )
    raise ConfigurationError(
        f"data source {config.data_source!r} has no live loop; use 'synthetic', 'binance' or "
        "'ccxt' (files are loaded with `squall import`)"
    )
