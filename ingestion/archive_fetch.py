"""HTTP for archive sites: small texts and resumable file downloads, with bounded retries.

Only temporary failures are retried (connection errors, a body cut short, timeouts, 5xx,
429/418), with full-jitter exponential backoff (``providers.http.backoff_delay``); a
``Retry-After`` up to the backoff cap is waited out. A 404 means "not published" and is
returned as ``None``, not raised: a range of archives usually has some that do not exist yet.
Any other 4xx is raised as ``ConfigurationError`` at once.

A download streams into a ``.part`` file (flushed chunk by chunk, so a killed process leaves
what it received) and resumes it with an HTTP ``Range`` request: ``206`` appends, a ``200``
(server ignores ranges) starts over, ``416`` (the part is not a prefix of the file) discards it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

import httpx

from ingestion.providers.http import RATE_LIMIT_STATUSES, backoff_delay, parse_retry_after
from storage.errors import ConfigurationError, TemporaryExchangeError

log = logging.getLogger(__name__)

_USER_AGENT: Final = "squall-archive-download"
T = TypeVar("T")


@dataclass(frozen=True)
class Fetched:
    """A finished download: the bytes this call received and where it resumed from."""

    bytes_received: int
    resumed_from: int  # size of the .part the first attempt continued (0: from the start)
    size: int  # the file's full size


class _TemporaryError(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class _NotFoundError(Exception):
    pass


class ArchiveHttp:
    """GET archive files and their checksums from one site, politely and resumably."""

    def __init__(
        self,
        *,
        timeout_s: float = 30.0,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ConfigurationError(f"timeout_s must be > 0, got {timeout_s}")
        if max_retries < 0:
            raise ConfigurationError(f"max_retries must be >= 0, got {max_retries}")
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            follow_redirects=True,
            headers={"User-Agent": _USER_AGENT},
        )

    def close(self) -> None:
        self._http.close()

    def get_text(self, url: str) -> str | None:
        """The body of ``url`` as text, or None when the site answers 404."""
        return self._retrying(url, lambda: self._text_once(url))

    def download(
        self,
        url: str,
        part: Path,
        *,
        on_start: Callable[[int | None, int], None] | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Fetched | None:
        """Stream ``url`` into ``part`` (resuming what is there); None when it is a 404.

        ``on_start(total_size_or_None, offset)`` is called once per attempt that gets a body,
        ``on_bytes(n)`` for every chunk written.
        """
        part.parent.mkdir(parents=True, exist_ok=True)
        first_offset = part.stat().st_size if part.exists() else 0
        received = [0]

        def once() -> int:
            return self._download_once(url, part, received, on_start, on_bytes)

        size = self._retrying(url, once)
        if size is None:
            return None
        return Fetched(bytes_received=received[0], resumed_from=first_offset, size=size)

    # ------------------------------------------------------------------------ internals
    def _retrying(self, url: str, attempt: Callable[[], T]) -> T | None:
        last = "no attempt made"
        for n in range(self.max_retries + 1):
            try:
                return attempt()
            except _NotFoundError:
                return None
            except _TemporaryError as exc:
                last = str(exc)
                if n == self.max_retries:
                    break
                delay = backoff_delay(n, self.backoff_base_s, self.backoff_max_s, self._rng)
                if exc.retry_after_s is not None:
                    delay = max(delay, min(exc.retry_after_s, self.backoff_max_s))
                log.info("GET %s attempt %d failed (%s); retry in %.2fs", url, n + 1, last, delay)
                if delay > 0:
                    self._sleep(delay)
        raise TemporaryExchangeError(
            f"GET {url} failed after {self.max_retries + 1} attempts; last error: {last}"
        )

    def _check(self, response: httpx.Response) -> None:
        status = response.status_code
        if status == 404:
            raise _NotFoundError
        if status in RATE_LIMIT_STATUSES:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise _TemporaryError(f"HTTP {status} (Retry-After: {retry_after}s)", retry_after)
        if status >= 500:
            raise _TemporaryError(f"HTTP {status}")
        if status >= 400 and status != 416:
            response.read()
            raise ConfigurationError(
                f"archive site refused GET {response.request.url}: HTTP {status} "
                f"{response.text[:200]}".rstrip()
            )

    def _send(self, url: str, headers: dict[str, str]) -> httpx.Response:
        try:
            request = self._http.build_request("GET", url, headers=headers)
            return self._http.send(request, stream=True)
        except httpx.UnsupportedProtocol as exc:
            raise ConfigurationError(f"bad archive base URL in {url!r}: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise _TemporaryError(f"timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise _TemporaryError(f"connection failed: {type(exc).__name__}: {exc}") from exc

    def _text_once(self, url: str) -> str:
        response = self._send(url, {})
        try:
            self._check(response)
            response.read()
            return response.text
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise _TemporaryError(f"body failed: {type(exc).__name__}: {exc}") from exc
        finally:
            response.close()

    def _download_once(
        self,
        url: str,
        part: Path,
        received: list[int],
        on_start: Callable[[int | None, int], None] | None,
        on_bytes: Callable[[int], None] | None,
    ) -> int:
        offset = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        response = self._send(url, headers)
        try:
            self._check(response)
            if response.status_code == 416:  # the part is not a prefix of this file
                part.unlink(missing_ok=True)
                raise _TemporaryError("HTTP 416 for the partial file; starting over", 0.0)
            if response.status_code == 206 and not _starts_at(response, offset):
                part.unlink(missing_ok=True)
                raise _TemporaryError("HTTP 206 for another range than asked; starting over", 0.0)
            if response.status_code != 206:
                offset = 0  # the server sent the whole file
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            if on_start is not None:
                on_start(total, offset)
            with open(part, "ab" if offset else "wb") as handle:
                for chunk in response.iter_bytes():  # as they arrive: none held back
                    handle.write(chunk)
                    handle.flush()
                    received[0] += len(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise _TemporaryError(f"download cut short: {type(exc).__name__}: {exc}") from exc
        finally:
            response.close()
        size = part.stat().st_size
        if total is not None and size != total:
            raise _TemporaryError(f"received {size} of {total} bytes")
        return size


def _starts_at(response: httpx.Response, offset: int) -> bool:
    """Whether a 206's ``Content-Range: bytes a-b/n`` starts at ``offset``."""
    value = response.headers.get("Content-Range", "")
    try:
        unit, rest = value.split(" ", 1)
        return unit == "bytes" and int(rest.split("-", 1)[0]) == offset
    except ValueError:
        return False
