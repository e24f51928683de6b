"""The ccxt side of the ccxt provider: one exchange object, its rate limiter, retries, errors.

* ccxt's own rate limiter (``enableRateLimit``) is the only one. Sync ccxt's throttle reads and
  writes the last request time without a lock, so threads sharing one exchange would all pass
  at once; the throttle is serialised here so its spacing holds across the supervisor's
  worker threads.
* Each response's status and headers are recorded per thread (ccxt's exceptions carry
  neither): the error mapping reads the status, ``Retry-After`` comes from the headers.
* Retries with full-jitter exponential backoff (``ingestion.providers.http.backoff_delay``)
  on temporary errors only. A ``Retry-After`` closes the exchange for every caller until it
  passes; a window longer than ``backoff_max_s`` fails fast with ``RateLimitedError``. This is
  a block window, not a second rate limiter.
* Error mapping: 429/418, ``RateLimitExceeded``, ``DDoSProtection`` -> ``RateLimitedError``;
  5xx and ccxt's ``OperationFailed`` family (``NetworkError``, ``RequestTimeout``,
  ``ExchangeNotAvailable``, ``BadResponse``) -> ``TemporaryExchangeError``; ``BadSymbol``,
  other 4xx and the rest of ccxt's ``ExchangeError`` family (``BadRequest``, ``NotSupported``,
  ...) -> ``ConfigurationError``, not retried.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import ccxt

from ingestion.providers.http import RATE_LIMIT_STATUSES, backoff_delay, parse_retry_after
from storage.errors import ConfigurationError, RateLimitedError, TemporaryExchangeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Failure:
    message: str
    rate_limited: bool = False
    retry_after_s: float | None = None


class _BlockWindow:
    """Closes the exchange for every caller while a ``Retry-After`` runs."""

    def __init__(self, sleep: Callable[[float], None], monotonic: Callable[[], float]) -> None:
        self._sleep = sleep
        self._monotonic = monotonic
        self._until = float("-inf")
        self._lock = threading.Lock()

    def block(self, seconds: float) -> None:
        with self._lock:
            self._until = max(self._until, self._monotonic() + seconds)

    def wait(self, max_wait_s: float, what: str) -> None:
        """Sleep out the window, or raise ``RateLimitedError`` when it is longer than
        ``max_wait_s`` (an IP ban of minutes: the caller comes back later)."""
        while True:
            with self._lock:
                left = self._until - self._monotonic()
            if left <= 0:
                return
            if left > max_wait_s:
                raise RateLimitedError(
                    f"{what}: exchange is rate limited for another {left:.1f}s "
                    f"(longer than the {max_wait_s:.1f}s this client waits)",
                    retry_after_s=left,
                )
            self._sleep(left)


class CcxtClient:
    """One ccxt exchange object (``exchange``) and the calls made through it.

    ``urls`` replaces entries of the exchange's ``urls['api']``; ``sleep`` and ``rng`` drive
    the backoff so tests need not wait (ccxt's limiter always sleeps for real).
    """

    def __init__(
        self,
        exchange_id: str,
        *,
        urls: Mapping[str, Any] | None = None,
        timeout_s: float = 10.0,
        rate_limit_ms: float | None = None,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if exchange_id not in ccxt.exchanges:
            raise ConfigurationError(
                f"ccxt has no exchange {exchange_id!r}; it has e.g. binance, bybit, okx, "
                f"kraken, coinbase ({len(ccxt.exchanges)} in all, see ccxt.exchanges)"
            )
        if timeout_s <= 0 or max_retries < 0 or not 0 <= backoff_base_s <= backoff_max_s:
            raise ConfigurationError(
                "need timeout_s > 0, max_retries >= 0 and 0 <= backoff_base_s <= backoff_max_s"
            )
        if rate_limit_ms is not None and rate_limit_ms <= 0:
            raise ConfigurationError(f"rate_limit_ms must be > 0, got {rate_limit_ms}")
        self.exchange_id = exchange_id
        self.name = f"ccxt:{exchange_id}"
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._window = _BlockWindow(sleep, time.monotonic)
        self._seen = threading.local()  # status and headers of this thread's last response
        self._markets_lock = threading.Lock()
        config: dict[str, Any] = {"enableRateLimit": True, "timeout": int(timeout_s * 1000)}
        if rate_limit_ms is not None:
            config["rateLimit"] = rate_limit_ms
        self.exchange: Any = getattr(ccxt, exchange_id)(config)
        if urls:
            self.exchange.urls = {**self.exchange.urls, "api": _override_api_urls(self, urls)}
        self._instrument()

    def _instrument(self) -> None:
        """Record each response's status and headers (per thread, for the error mapping and
        ``Retry-After``), and serialise ccxt's throttle so its leaky bucket holds across the
        worker threads that share this exchange (sync ccxt keeps it unlocked)."""
        ex = self.exchange
        on_rest_response = ex.on_rest_response
        seen = self._seen

        def record(code: int, reason: str, url: str, method: str, headers: Any, *rest: Any) -> Any:
            seen.status, seen.headers = code, headers
            return on_rest_response(code, reason, url, method, headers, *rest)

        throttle = ex.throttle
        lock = threading.Lock()

        def locked_throttle(cost: float | None = None) -> None:
            with lock:
                throttle(cost)
                ex.lastRestRequestTimestamp = ex.milliseconds()

        ex.on_rest_response = record
        ex.throttle = locked_throttle

    def call(self, what: str, method: str, *args: Any) -> Any:
        """``exchange.<method>(*args)`` with the retries and error mapping of the module doc."""
        fn = getattr(self.exchange, method)
        failure = _Failure("no attempt made")
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._back_off(attempt - 1, failure)
            self._window.wait(self.backoff_max_s, f"{self.name} {what}")
            self._seen.status, self._seen.headers = None, None
            try:
                return fn(*args)
            except ccxt.BaseError as exc:
                failure = self._classify(what, exc)
            log.info("%s %s attempt %d failed: %s", self.name, what, attempt + 1, failure.message)
        told = f"{self.name} {what} failed after {self.max_retries + 1} attempts"
        if failure.rate_limited:
            raise RateLimitedError(
                f"{told}; still rate limited: {failure.message}", failure.retry_after_s
            )
        raise TemporaryExchangeError(f"{told}; last error: {failure.message}")

    def _classify(self, what: str, exc: Exception) -> _Failure:
        """A retryable failure, or raise ``ConfigurationError`` when retrying cannot help."""
        status: int | None = getattr(self._seen, "status", None)
        headers = getattr(self._seen, "headers", None) or {}
        text = f"{type(exc).__name__}: {exc}"[:300]
        if status in RATE_LIMIT_STATUSES or isinstance(
            exc, ccxt.RateLimitExceeded | ccxt.DDoSProtection
        ):
            retry_after = parse_retry_after(headers.get("Retry-After"))
            if retry_after is not None:
                self._window.block(retry_after)  # at once: concurrent callers stop too
            return _Failure(f"{text} (Retry-After: {retry_after}s)", True, retry_after)
        if status is not None and status >= 500:
            return _Failure(f"HTTP {status} {text}")
        if isinstance(exc, ccxt.BadSymbol):
            raise ConfigurationError(f"{self.name} {what}: unknown symbol: {exc}") from exc
        if status is not None and 400 <= status < 500 and status != 408:
            raise ConfigurationError(f"{self.name} rejected {what}: HTTP {status} {exc}") from exc
        if isinstance(exc, ccxt.OperationFailed):  # network, timeout, maintenance, bad body
            return _Failure(text)
        raise ConfigurationError(f"{self.name} {what}: {text}") from exc

    def _back_off(self, attempt: int, failure: _Failure) -> None:
        delay = backoff_delay(attempt, self.backoff_base_s, self.backoff_max_s, self._rng)
        if failure.rate_limited:
            if failure.retry_after_s is None:  # no window given: close for a backoff
                self._window.block(delay)
            return  # the window is waited out (or fails fast) before the next attempt
        if delay > 0:
            self._sleep(delay)

    def markets(self) -> dict[str, Any]:
        """The exchange's markets, loaded once (``load_markets``, retried like any call)."""
        with self._markets_lock:
            if self.exchange.markets is None:
                self.call("load_markets", "load_markets")
            return dict(self.exchange.markets)

    def close(self) -> None:
        """Release pooled connections."""
        self.exchange.close()


def _override_api_urls(client: CcxtClient, urls: Mapping[str, Any]) -> dict[str, Any]:
    """``urls['api']`` with ``urls`` replacing entries; unknown keys are a configuration
    error naming the keys the exchange has."""
    api = client.exchange.urls.get("api")
    if not isinstance(api, dict):
        raise ConfigurationError(f"{client.exchange_id}'s urls['api'] is not an object")
    unknown = sorted(set(urls) - set(api))
    if unknown:
        raise ConfigurationError(
            f"{client.exchange_id} has no api url {', '.join(unknown)}; "
            f"its keys: {', '.join(sorted(api))}"
        )
    for key, value in urls.items():
        if not (isinstance(value, str) and value.startswith(("http://", "https://"))):
            raise ConfigurationError(f"api url {key!r} must be an http(s) URL, got {value!r}")
    return {**api, **urls}
