"""A polite JSON-over-HTTP client for exchange REST APIs: rate-limited, retrying, bounded.

Exchanges punish clients that hammer them (Binance answers 429, then bans the IP with 418), so
every request first passes a per-host ``HostGate``: a token bucket (``requests_per_second``)
plus a *block window*. When a host answers 429/418 with ``Retry-After``, the window closes
that host for **every** caller of this client, not only the request being retried, and a
window longer than the backoff cap fails fast with ``RateLimitedError`` instead of stalling a
worker for minutes.

Only temporary failures are retried (connection errors, timeouts, 5xx, 429/418, a 200 whose
body is not JSON), with exponential backoff and full jitter (AWS "Exponential Backoff And
Jitter": ``uniform(0, min(cap, base * 2**attempt))``) so that many workers recovering at once
do not retry in lockstep. Any other 4xx is the caller's mistake and raises
``ConfigurationError`` at once, carrying the venue's own message. After ``max_retries``
retries the last failure is raised as ``RateLimitedError`` or ``TemporaryExchangeError``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from storage.errors import ConfigurationError, RateLimitedError, TemporaryExchangeError

log = logging.getLogger(__name__)

#: Statuses that mean "slow down": 429 (too many requests) and 418 (Binance's IP ban).
RATE_LIMIT_STATUSES: frozenset[int] = frozenset({429, 418})

Params = Mapping[str, str | int]
ErrorMessage = Callable[[httpx.Response], str]


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: a uniform draw from ``[0, min(cap, base * 2**attempt)]``."""
    return rng.uniform(0.0, min(cap_s, base_s * 2.0**attempt))


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (Binance sends delta-seconds); None when absent or unreadable."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(0.0, seconds)


class HostGate:
    """Admission control for one host: a token bucket and a block window.

    ``acquire`` reserves a token (the bucket may go into debt, so each caller computes its own
    wait and sleeps once: no busy loop even with an injected ``sleep`` that returns at once),
    then waits out any block window. If another thread extends the window while we sleep, we
    wait again, so no request leaves inside a window this client knows about.
    """

    def __init__(
        self,
        requests_per_second: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if requests_per_second <= 0:
            raise ConfigurationError(f"requests_per_second must be > 0, got {requests_per_second}")
        self._rate = requests_per_second
        self._capacity = max(1.0, requests_per_second)  # a burst of up to one second's worth
        self._tokens = self._capacity
        self._monotonic = monotonic
        self._sleep = sleep
        self._last = monotonic()
        self._blocked_until = float("-inf")
        self._generation = 0  # bumped on every block, so waiters notice a new window
        self._lock = threading.Lock()

    def block(self, seconds: float) -> None:
        """Close the host for ``seconds`` from now (a longer existing window is kept)."""
        with self._lock:
            until = self._monotonic() + seconds
            if until > self._blocked_until:
                self._blocked_until = until
                self._generation += 1

    def blocked_for(self) -> float:
        """Seconds left in the current block window (0 when open)."""
        with self._lock:
            return max(0.0, self._blocked_until - self._monotonic())

    def acquire(self, max_block_wait_s: float) -> None:
        """Wait for a token and for the block window to pass.

        Raises ``RateLimitedError`` instead of waiting when the window is longer than
        ``max_block_wait_s`` (e.g. an IP ban of minutes): the caller retries later.
        """
        with self._lock:
            now = self._monotonic()
            self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._rate)
            self._last = now
            self._tokens -= 1.0
            token_wait = max(0.0, -self._tokens / self._rate)
            block_wait = self._blocked_until - now
            seen = self._generation
        while True:
            if block_wait > max_block_wait_s:
                with self._lock:
                    self._tokens += 1.0  # nothing was sent: give the token back
                raise RateLimitedError(
                    f"host is rate limited for another {block_wait:.1f}s "
                    f"(longer than the {max_block_wait_s:.1f}s this client waits)",
                    retry_after_s=block_wait,
                )
            wait = max(token_wait, block_wait)
            if wait > 0:
                self._sleep(wait)
            with self._lock:
                if self._generation == seen:
                    return
                seen = self._generation
                token_wait = 0.0
                block_wait = self._blocked_until - self._monotonic()


@dataclass(frozen=True)
class _Success:
    value: Any


@dataclass(frozen=True)
class _Failure:
    """One failed attempt: what to tell the user and how to treat it."""

    message: str
    rate_limited: bool = False
    retry_after_s: float | None = None


class RetryingClient:
    """GET JSON from exchange hosts with rate limiting, timeouts and bounded, jittered retries.

    ``name`` prefixes every error message; ``error_message`` turns a 4xx response into the
    venue's own explanation (e.g. Binance's ``{"code": -1121, "msg": "Invalid symbol."}``).
    """

    def __init__(
        self,
        *,
        name: str,
        timeout_s: float = 10.0,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        requests_per_second: float = 10.0,
        error_message: ErrorMessage | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        transport: httpx.BaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ConfigurationError(f"timeout_s must be > 0, got {timeout_s}")
        if max_retries < 0:
            raise ConfigurationError(f"max_retries must be >= 0, got {max_retries}")
        if requests_per_second <= 0:
            raise ConfigurationError(f"requests_per_second must be > 0, got {requests_per_second}")
        if backoff_base_s < 0 or backoff_max_s < backoff_base_s:
            raise ConfigurationError(
                f"need 0 <= backoff_base_s <= backoff_max_s, got {backoff_base_s}, {backoff_max_s}"
            )
        self.name = name
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._rps = requests_per_second
        self._error_message = error_message or _default_error_message
        self._sleep = sleep
        self._monotonic = monotonic
        self._rng = rng or random.Random()
        self._gates: dict[str, HostGate] = {}
        self._gates_lock = threading.Lock()
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            headers=dict(headers or {}),
            follow_redirects=False,
        )

    def gate(self, url: str) -> HostGate:
        """The admission gate of ``url``'s host (one per scheme://host:port)."""
        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.netloc}"
        with self._gates_lock:
            gate = self._gates.get(key)
            if gate is None:
                gate = HostGate(self._rps, monotonic=self._monotonic, sleep=self._sleep)
                self._gates[key] = gate
            return gate

    def get_json(self, url: str, params: Params | None = None) -> Any:
        """GET ``url`` and decode its JSON body, retrying temporary failures (see module doc)."""
        gate = self.gate(url)
        query = {k: str(v) for k, v in (params or {}).items()}
        failure = _Failure("no attempt made")
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._back_off(gate, attempt - 1, failure)
            try:
                gate.acquire(self.backoff_max_s)
            except RateLimitedError as exc:
                raise RateLimitedError(f"{self.name}: GET {url}: {exc}", exc.retry_after_s) from exc
            outcome = self._attempt(url, query)
            if not isinstance(outcome, _Failure):
                return outcome.value
            failure = outcome
            log.info(
                "%s: GET %s attempt %d failed: %s", self.name, url, attempt + 1, failure.message
            )
        what = f"{self.name}: GET {url} failed after {self.max_retries + 1} attempts"
        if failure.rate_limited:
            raise RateLimitedError(
                f"{what}; still rate limited: {failure.message}", failure.retry_after_s
            )
        raise TemporaryExchangeError(f"{what}; last error: {failure.message}")

    def _back_off(self, gate: HostGate, attempt: int, failure: _Failure) -> None:
        """Wait before a retry: a rate limit closes the host for everyone, others sleep here."""
        if failure.rate_limited:
            if failure.retry_after_s is None:  # no window given: close the host for a backoff
                gate.block(
                    backoff_delay(attempt, self.backoff_base_s, self.backoff_max_s, self._rng)
                )
            return  # acquire() waits the window out (or fails fast when it is too long)
        delay = backoff_delay(attempt, self.backoff_base_s, self.backoff_max_s, self._rng)
        if delay > 0:
            self._sleep(delay)

    def _attempt(self, url: str, query: dict[str, str]) -> _Success | _Failure:
        try:
            response = self._http.get(url, params=query)
        except httpx.UnsupportedProtocol as exc:
            raise ConfigurationError(f"{self.name}: bad base URL in {url!r}: {exc}") from exc
        except httpx.TimeoutException as exc:
            return _Failure(f"timed out after {self.timeout_s}s ({type(exc).__name__})")
        except (httpx.TransportError, httpx.DecodingError) as exc:
            return _Failure(f"connection failed: {type(exc).__name__}: {exc}")
        status = response.status_code
        if status in RATE_LIMIT_STATUSES:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if retry_after is not None:
                # Close the host at once, before any backoff bookkeeping, so that concurrent
                # callers stop sending as early as possible.
                self.gate(url).block(retry_after)
            return _Failure(
                f"HTTP {status} {self._error_message(response)} (Retry-After: {retry_after}s)",
                rate_limited=True,
                retry_after_s=retry_after,
            )
        if status >= 500:
            return _Failure(f"HTTP {status} {self._error_message(response)}")
        if status >= 300:
            raise ConfigurationError(
                f"{self.name} rejected GET {response.request.url}: HTTP {status} "
                f"{self._error_message(response)}"
            )
        try:
            return _Success(response.json())
        except ValueError:
            return _Failure(f"HTTP {status} with a body that is not JSON: {response.text[:200]!r}")

    def close(self) -> None:
        """Close pooled connections."""
        self._http.close()


def _default_error_message(response: httpx.Response) -> str:
    return response.text[:300]
