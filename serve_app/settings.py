"""squall's one settings object. Every value can be set with a ``SQUALL_*`` variable."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ingestion.config import IngestConfig
from storage.engine import DEFAULT_DATABASE_URL, redact_url
from storage.intervals import INTERVAL_SECONDS

CsvList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Configuration for the API, ingestion and compute; lists accept ``A,B,C`` or JSON."""

    model_config = SettingsConfigDict(env_prefix="SQUALL_", extra="ignore", frozen=True)

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL: `sqlite:///path`, or `postgresql://user:pass@host/db` for "
        "Postgres (psycopg 3)",
        repr=False,
    )
    coins: CsvList = Field(["BTC", "ETH", "SOL"], description="base assets to track")
    intervals: CsvList = Field(
        ["1m", "5m", "1h", "1d"],
        description="bar intervals to track (" + " ".join(INTERVAL_SECONDS) + ")",
    )
    quote_asset: str = Field("USDT", description="quote asset of every tracked pair")
    data_source: Literal["synthetic", "binance", "ccxt", "file"] = Field(
        "synthetic",
        description="where live candles come from: `synthetic` (an offline market), `binance` "
        "(its REST API), `ccxt` (any exchange ccxt covers: `SQUALL_CCXT_*`)",
    )
    api_host: str = Field("127.0.0.1", description="address the HTTP API binds to")
    api_port: int = Field(8000, ge=1, le=65535, description="port of the HTTP API")
    ray_address: str | None = Field(
        None, description="Ray cluster to join (e.g. 'auto'); unset starts a local one"
    )
    dashboard_port: int = Field(8265, ge=1, le=65535, description="Ray dashboard port")
    ray_jobs_address: str | None = Field(
        None,
        description="Ray job submission address (http://head:8265) that `squall sweep` uses; "
        "unset: the local cluster's dashboard, http://127.0.0.1:<dashboard_port>",
    )
    serve_replicas: int = Field(
        2,
        ge=1,
        le=64,
        description="API replicas under Ray Serve (2: one per core of a 2-core laptop; one "
        "replica is bound to one core by the GIL)",
    )
    max_candles_per_request: int = Field(
        5000, ge=1, le=1_000_000, description="cap on candles returned by one request"
    )
    default_candle_limit: int = Field(500, ge=1, description="candles returned when no limit")
    max_import_rows: int = Field(
        20_000_000, ge=1, description="cap on rows one import command reads"
    )
    log_level: str = Field("INFO", description="root log level")
    ingest_enabled: bool = Field(True, description="run the ingestion supervisor under `squall up`")
    features_enabled: bool = Field(
        True, description="keep the feature store current as candles arrive (with ingestion)"
    )
    backfill_days: float = Field(
        90.0, gt=0, le=3650, description="history an empty series is filled with on first start"
    )
    ingest_grace_s: float = Field(
        90.0, ge=0, description="seconds after a bar closes before its series counts as stalled"
    )
    derivatives_period_s: float = Field(
        60.0, ge=1, description="seconds between snapshot/funding/open-interest fetches"
    )
    synthetic_seed: int = Field(7, description="seed of the synthetic market")
    binance_spot_url: str = Field(
        "https://api.binance.com", description="Binance spot REST base URL"
    )
    binance_futures_url: str = Field(
        "https://fapi.binance.com", description="Binance USDT-M futures REST base URL"
    )
    binance_timeout_s: float = Field(10.0, gt=0, description="timeout of every exchange call")
    binance_requests_per_second: float = Field(
        10.0, gt=0, description="client-side rate limit towards the exchange"
    )
    binance_archive_url: str = Field(
        "https://data.binance.vision",
        description="base URL of Binance's public kline archives (`squall download`)",
    )
    download_dir: str = Field(
        "./var/downloads",
        description="cache of downloaded, verified archives (`squall download`); a re-run "
        "finds them here instead of fetching again",
    )
    ccxt_exchange: str = Field(
        "binance",
        pattern=r"^[a-z0-9]+$",
        description="ccxt exchange id (ccxt.exchanges) when data_source is ccxt",
    )
    ccxt_market: Literal["spot", "swap"] = Field(
        "spot", description="ccxt candles from COIN/QUOTE (spot) or COIN/QUOTE:QUOTE (swap)"
    )
    ccxt_urls: dict[str, str] = Field(
        default_factory=dict,
        description="JSON object replacing entries of the ccxt exchange's urls['api'] "
        '(e.g. {"public": "http://127.0.0.1:9000/api/v3"}); empty: the real endpoints',
    )
    ccxt_timeout_s: float = Field(10.0, gt=0, description="timeout of every ccxt call")
    ccxt_rate_limit_ms: float | None = Field(
        None, gt=0, description="ms between requests for ccxt's limiter; unset: the exchange's"
    )
    db_connect_timeout_s: int = Field(
        5, ge=1, le=120, description="seconds the API waits for a Postgres connection"
    )
    db_pool_size: int = Field(
        4,
        ge=1,
        le=64,
        description="database connections each API process keeps open; also how many requests "
        "read the database at once (more threads than cores only queue on the GIL)",
    )

    compute_workers_per_node: int | None = Field(
        None,
        ge=1,
        le=256,
        description="warm compute workers (Ray actors keeping JAX and the kernels compiled) "
        "on every node; unset: one per CPU of the node",
    )
    jax_cache_dir: str | None = Field(
        "./var/jax-cache",
        description="folder of the compiled-kernel cache every squall process shares (a kernel "
        "compiled once is loaded by later processes); empty: no cache",
    )
    warm_up: bool = Field(
        True,
        description="compile the common kernels when a replica or worker starts (in the "
        "background: readiness does not wait for it)",
    )
    ready_after_warm_up: bool = Field(
        False,
        description="/ready answers 503 until this replica's kernel warm-up is done, so a "
        "load balancer routes only to warm replicas (off: /ready never waits for it)",
    )
    run_heartbeat_s: float = Field(
        2.0, gt=0, le=300, description="seconds between heartbeats of a running run"
    )
    run_queue_timeout_s: float = Field(
        3600.0,
        gt=0,
        le=7 * 86_400,
        description="a queued run no worker has started within this is marked failed "
        "(queued runs wait for a free worker; a failed hand-over is marked at once)",
    )
    run_heartbeat_timeout_s: float = Field(
        30.0,
        gt=0,
        le=86_400,
        description="a queued or running run whose heartbeat is older than this is marked "
        "failed (its worker died); checked at start-up and every third of it",
    )
    max_concurrent_jobs: int = Field(
        2,
        ge=1,
        le=256,
        description="costly requests (backtests, walk-forward, portfolio runs, risk reports, "
        "simulations, signals, report pages and charts) one API replica computes at once",
    )
    job_queue_size: int = Field(
        8,
        ge=0,
        le=256,
        description="costly requests one API replica lets wait for a free slot; one more is "
        "answered 503 `busy` with Retry-After at once (never an unbounded queue)",
    )
    job_queue_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="seconds a waiting costly request waits for a slot before it is answered "
        "503 `busy` with Retry-After",
    )
    max_active_runs: int = Field(
        32,
        ge=1,
        le=100_000,
        description="asynchronous runs (`mode: async`, large simulations) queued or running at "
        "once in the registry, over every replica; one more is answered 503 `too_many_runs`",
    )
    max_body_bytes: int = Field(
        1_048_576,
        ge=1024,
        le=1_073_741_824,
        description="largest request body accepted; a larger one (by its Content-Length, or "
        "counted while it streams in) is answered 413 before it is parsed",
    )
    api_token: SecretStr | None = Field(
        None,
        description="when set, POST and DELETE routes (and every read, with "
        "SQUALL_AUTH_READS) need `Authorization: Bearer <token>` or `X-API-Key: <token>`; "
        "unset (and no keys file): no auth, meant for a loopback address",
        repr=False,
    )
    api_keys_file: str | None = Field(
        None,
        description="file of accepted tokens, one a line (blank lines and `#` comments "
        "ignored), besides SQUALL_API_TOKEN; read again when it changes",
    )
    auth_reads: bool = Field(
        False,
        description="with a token or keys file set, GET routes need one too (except /live, "
        "/ready, /metrics, /docs, /openapi.json and the /ui page files)",
    )
    strategy_modules: CsvList = Field(
        [],
        description="Python strategy plugins to load, besides the `squall.strategies` entry "
        "points: module paths `pkg.mod:ATTR` or `pkg.mod` (every plugin in it); each must be "
        "importable (installed or on PYTHONPATH); GET /strategies lists them (docs/strategies.md)",
    )

    @field_validator("coins", "intervals", "strategy_modules", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("coins")
    @classmethod
    def _upper(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one coin is required")
        return [c.upper() for c in value]

    @field_validator("intervals")
    @classmethod
    def _known_intervals(cls, value: list[str]) -> list[str]:
        unknown = [i for i in value if i not in INTERVAL_SECONDS]
        if unknown:
            raise ValueError(f"unknown intervals {unknown}; valid: {', '.join(INTERVAL_SECONDS)}")
        return value

    @property
    def database_url_redacted(self) -> str:
        return redact_url(self.database_url)

    def __repr_args__(self) -> Any:
        yield "database_url", self.database_url_redacted
        yield from super().__repr_args__()


def ingest_config(settings: Settings) -> IngestConfig:
    """The ingestion supervisor's view of the settings."""
    return IngestConfig(
        database_url=settings.database_url,
        coins=tuple(settings.coins),
        intervals=tuple(settings.intervals),
        data_source=settings.data_source,
        quote_asset=settings.quote_asset,
        backfill_days=settings.backfill_days,
        grace_s=settings.ingest_grace_s,
        derivatives_period_s=settings.derivatives_period_s,
        synthetic_seed=settings.synthetic_seed,
        binance_spot_url=settings.binance_spot_url,
        binance_futures_url=settings.binance_futures_url,
        binance_timeout_s=settings.binance_timeout_s,
        binance_requests_per_second=settings.binance_requests_per_second,
        ccxt_exchange=settings.ccxt_exchange,
        ccxt_market=settings.ccxt_market,
        ccxt_urls=dict(settings.ccxt_urls),
        ccxt_timeout_s=settings.ccxt_timeout_s,
        ccxt_rate_limit_ms=settings.ccxt_rate_limit_ms,
    )


def _default_text(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "none"
    return str(value)


def settings_table() -> str:
    """The README's configuration table, generated from the fields themselves (a test holds
    the README to it, so no setting goes undocumented): ``squall settings --markdown``."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = _default_text(field.get_default(call_default_factory=True))
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `SQUALL_{name.upper()}` | `{default}` | {meaning} |")
    return "\n".join(rows) + "\n"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
