"""The direct Binance provider vs the ccxt provider (ccxt's ``binance``), on the fake exchange.

What is measured
----------------
``fetch_candles`` of ``--candles`` (default 50,000) closed 1m candles of one symbol (spot
``BTCUSDT``, a seeded random walk) from ``tests.fakes.exchange.FakeExchange``, served from a
**child process** so that this process's CPU time is the client's alone. Each provider fetches
the whole range ``--runs`` times (default 5) with pages of 1,000 bars (both: Binance spot's
maximum, which ccxt's ``features`` also give); reported: wall time (median, min, max),
candles/s, this process's CPU seconds per run (median) and requests per run. Two limiter
settings:

* ``unlimited``: client-side limits out of the way (Binance provider 10,000 req/s; ccxt
  ``rateLimit`` 0.001 ms), i.e. what each client costs per page;
* ``defaults``: as configured out of the box (Binance provider 10 req/s, its
  ``SQUALL_BINANCE_REQUESTS_PER_SECOND`` default; ccxt: binance's own ``rateLimit`` of 50 ms
  times the endpoint's weight, 0.4 for spot klines).

ccxt loads the venue's markets once per process (3 ``exchangeInfo`` requests); that is timed
apart (``markets_s``) and not inside the runs.

Correctness, checked on the same data (in-process fake, so its quirks can be switched on):

* both return the same bars with the same open/high/low/close/base volume, equal to the
  fake's values;
* ``volume_quote`` and ``trade_count``: the fake's values from the Binance provider, NULL
  (NaN) from ccxt (its OHLCV rows have base volume only; never estimated);
* the still-open bar (venue "now" mid-bar, client clock right): neither returns it;
* the client clock 30 s ahead of the venue: both return the still-forming bar (Binance's
  live kline carries its *scheduled* ``closeTime``, so the Binance provider cannot tell
  either); the 2-bar overlap of the next run overwrites it;
* a venue that marks a partial bar with a truncated ``closeTime`` (the fake's
  ``partial_last_candle``): only the Binance provider drops it (ccxt has no close time).

Run (repository root; ~1 minute)::

    python -m benchmarks.bench_ccxt
    python -m benchmarks.bench_ccxt --candles 20000 --runs 3 --json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import ccxt
import numpy as np
import pandas as pd

from ingestion.providers.binance import BinanceProvider
from ingestion.providers.ccxt_provider import CcxtProvider
from tests.fakes.exchange import FakeExchange, synthetic_series

START_MS = 1_672_531_200_000  # 2023-01-01 00:00 UTC
MINUTE = 60


def make_fake(candles: int) -> FakeExchange:
    fake = FakeExchange()
    series = synthetic_series("1m", candles, seed=5, price=30_000.0, start_ms=START_MS)
    fake.add_series("spot", "BTCUSDT", series)
    return fake


def serve(candles: int, ports: Any, stop: Any) -> None:
    """Child process: the fake on a free port until ``stop`` is set."""
    with make_fake(candles) as fake:
        ports.put(fake._port)
        stop.wait()


def ccxt_urls(base_url: str) -> dict[str, str]:
    return {k: base_url + urlsplit(v).path for k, v in ccxt.binance().urls["api"].items()}


def binance(base_url: str, limited: bool) -> BinanceProvider:
    rps = 10.0 if limited else 10_000.0
    return BinanceProvider(base_url, base_url, requests_per_second=rps, klines_page_limit=1000)


def via_ccxt(base_url: str, limited: bool) -> CcxtProvider:
    return CcxtProvider(
        "binance",
        urls=ccxt_urls(base_url),
        rate_limit_ms=None if limited else 0.001,
        ohlcv_page_limit=1000,
    )


class Counter:
    """Wraps a callable and counts its calls (one per HTTP request for both clients)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn, self.n = fn, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.n += 1
        return self.fn(*args, **kwargs)

    def value(self) -> int:
        return self.n


def timed_runs(provider: Any, candles: int, runs: int, count: Callable[[], int]) -> dict[str, Any]:
    end = START_MS // 1000 + (candles - 1) * MINUTE
    far = end + 10 * 365 * 86_400
    walls, cpus, requests = [], [], []
    for _ in range(runs):
        before = count()
        cpu0, t0 = time.process_time(), time.perf_counter()
        frame = provider.fetch_candles("BTC", "1m", START_MS // 1000, end, now=far)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - cpu0)
        requests.append(count() - before)
        assert len(frame) == candles, (len(frame), candles)
    median = statistics.median(walls)
    return {
        "wall_s_median": round(median, 3),
        "wall_s_min": round(min(walls), 3),
        "wall_s_max": round(max(walls), 3),
        "candles_per_s": round(candles / median),
        "cpu_s_median": round(statistics.median(cpus), 3),
        "requests_per_run": requests[-1],
    }


def speed(candles: int, runs: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    ports, stop = ctx.Queue(), ctx.Event()
    child = ctx.Process(target=serve, args=(candles, ports, stop), daemon=True)
    child.start()
    try:
        base_url = f"http://127.0.0.1:{ports.get(timeout=60)}"
        out: dict[str, Any] = {}
        for limited in (False, True):
            label = "defaults" if limited else "unlimited"
            b = binance(base_url, limited)
            sent = Counter(b._http.get_json)
            b._http.get_json = sent  # type: ignore[method-assign]
            out[f"binance/{label}"] = timed_runs(b, candles, runs, sent.value)
            b.close()
            c = via_ccxt(base_url, limited)
            t0 = time.perf_counter()
            c.markets()
            markets_s = time.perf_counter() - t0
            calls = Counter(c.exchange.fetch)
            c.exchange.fetch = calls
            result = timed_runs(c, candles, runs, calls.value)
            out[f"ccxt/{label}"] = {**result, "markets_s": round(markets_s, 3)}
            c.close()
        return out
    finally:
        stop.set()
        child.join(10)


def correctness(candles: int) -> dict[str, Any]:
    n = min(candles, 5_000)
    end = START_MS // 1000 + (n - 1) * MINUTE
    far = end + 86_400
    checks: dict[str, Any] = {}
    with make_fake(n) as fake:
        series = fake.series("spot", "BTCUSDT", "1m")
        b, c = binance(fake.base_url, False), via_ccxt(fake.base_url, False)
        fb = b.fetch_candles("BTC", "1m", START_MS // 1000, end, now=far)
        fc = c.fetch_candles("BTC", "1m", START_MS // 1000, end, now=far)
        cols = ["ts", "open", "high", "low", "close", "volume_base"]
        checks["same_bars_and_prices"] = bool(fb[cols].equals(fc[cols]))
        checks["prices_equal_the_venue"] = bool(
            np.array_equal(fc["close"].to_numpy(), series.values[:, 3])
            and np.array_equal(fc["volume_base"].to_numpy(), series.values[:, 4])
        )
        checks["binance_volume_quote_equals_venue"] = bool(
            np.array_equal(fb["volume_quote"].to_numpy(), series.values[:, 5])
        )
        checks["ccxt_volume_quote_null"] = bool(fc["volume_quote"].isna().all())
        checks["ccxt_trade_count_null"] = bool(fc["trade_count"].isna().all())

        live_open = START_MS + (n - 10) * 60_000  # venue now: 30 s into that bar
        fake.set_now(live_open + 30_000)
        venue_now = (live_open + 30_000) // 1000
        last = {
            "binance": _last(
                b.fetch_candles("BTC", "1m", venue_now - 3600, venue_now, now=venue_now)
            ),
            "ccxt": _last(c.fetch_candles("BTC", "1m", venue_now - 3600, venue_now, now=venue_now)),
        }
        checks["open_bar_dropped_clock_right"] = {
            k: v == live_open // 1000 - MINUTE for k, v in last.items()
        }
        ahead = venue_now + 30  # client clock 30 s ahead: the live bar looks closed
        checks["forming_bar_returned_clock_30s_ahead"] = {
            "binance": _last(b.fetch_candles("BTC", "1m", ahead - 3600, ahead, now=ahead))
            == live_open // 1000,
            "ccxt": _last(c.fetch_candles("BTC", "1m", ahead - 3600, ahead, now=ahead))
            == live_open // 1000,
        }
        fake.partial_last_candle()
        checks["truncated_close_time_bar_dropped"] = {
            "binance": _last(b.fetch_candles("BTC", "1m", ahead - 3600, ahead, now=ahead))
            == live_open // 1000 - MINUTE,
            "ccxt": _last(c.fetch_candles("BTC", "1m", ahead - 3600, ahead, now=ahead))
            == live_open // 1000 - MINUTE,
        }
        b.close()
        c.close()
    return checks


def _last(frame: pd.DataFrame) -> int:
    return int(frame["ts"].iloc[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candles", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = {
        "candles": args.candles,
        "runs": args.runs,
        "ccxt_version": ccxt.__version__,
        "speed": speed(args.candles, args.runs),
        "correctness": correctness(args.candles),
    }
    result["total_s"] = round(time.perf_counter() - started, 1)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return 0
    print(f"{args.candles:,} closed 1m candles, {args.runs} runs each, ccxt {ccxt.__version__}")
    header = f"{'provider/limits':<20} {'median s':>9} {'min':>7} {'max':>7} {'candles/s':>10}"
    print(header + f" {'cpu s':>7} {'requests':>9} {'markets s':>10}")
    for name, row in result["speed"].items():
        print(
            f"{name:<20} {row['wall_s_median']:>9.3f} {row['wall_s_min']:>7.3f} "
            f"{row['wall_s_max']:>7.3f} {row['candles_per_s']:>10,} {row['cpu_s_median']:>7.3f} "
            f"{row['requests_per_run']:>9} {row.get('markets_s', ''):>10}"
        )
    print("correctness:")
    for name, value in result["correctness"].items():
        print(f"  {name}: {value}")
    print(f"total {result['total_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
