"""Sweep throughput: squall's one-kernel EMA-crossover grid vs vectorised NumPy vs vectorbt.

What is measured (candles x parameter sets per second, one run, same data and grid)
-------------------------------------------------------------------------------------
EMA-crossover long/flat, all-in, fee ``--fee-bps`` per side, orders at the next bar's open,
over ``--bars`` (1,000,000) synthetic 1-minute candles and a ``--fasts`` x ``--slows`` grid
(10 x 10 = 100 pairs); each implementation returns total return, Sharpe and max drawdown per
pair.

* squall: :func:`compute.backtest.sweep.sweep` (warm; the first call, compile included, printed
apart),
  on one thread and on ``--threads`` (2: the grid split into two kernel calls run from two
  Python threads; XLA releases the GIL). The targets are checked on the faster of the two;
  both ratios are printed;
* NumPy: a vectorised pandas/NumPy pipeline (``ewm`` per distinct span once, then per pair
  NumPy arrays: signal, positions, per-bar returns with fees, cumprod, running max);
* vectorbt 1.2: ``vbt.MA.run(ewm=True)`` per distinct span, crossover signals, and
  ``Portfolio.from_signals(price=open, size=inf, fees=...)`` with entries/exits shifted one bar
  (next-open execution), in chunks of ``--vbt-chunk`` pairs (unchunked it needs > 20 GB); run
  on the first ``--vbt-pairs`` pairs only (its rate is per pair-candle, so a subset measures it).

Agreement: vectorbt is fed squall's own signals for ``--check`` pairs and its total returns
must equal squall's to 1e-9 (same convention: fill at the next open, fee on traded notional,
all-in). vectorbt's own EMAs are not SMA-seeded, so its pipeline's signals differ in warm-up.
Memory: peak RSS of the process after the squall sweep (XLA allocations are outside
``tracemalloc``) and ``tracemalloc``'s peak of Python allocations during it.

Run (repository root)::

    python -m benchmarks.bench_backtest
    python -m benchmarks.bench_backtest --bars 200000 --vbt-pairs 5
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.bench_indicators import candles
from compute.backtest.sweep import ema_grid, sweep
from compute.indicators.signals import ema_crossover

PPY = 525_600.0


def _best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def numpy_sweep(
    o: np.ndarray, c: np.ndarray, fast: np.ndarray, slow: np.ndarray, fee: float
) -> dict:
    """The vectorised pandas/NumPy baseline (same accounting as squall)."""
    s = pd.Series(c)
    emas = {
        int(n): s.ewm(span=int(n), adjust=False).mean().to_numpy()
        for n in np.unique(np.r_[fast, slow])
    }
    prev = np.r_[c[0], c[:-1]]
    r_hold, r_entry, r_exit = c / prev - 1, c / (o * (1 + fee)) - 1, o / prev * (1 - fee) - 1
    out: dict[str, list[float]] = {"total_return": [], "sharpe": [], "max_drawdown": []}
    for f, sl in zip(fast, slow, strict=True):
        p = emas[int(f)] > emas[int(sl)]
        h = np.r_[False, p[:-1]]
        hp = np.r_[False, h[:-1]]
        r = np.where(h & hp, r_hold, np.where(h, r_entry, np.where(hp, r_exit, 0.0)))[1:]
        eq = np.cumprod(1 + r)
        out["total_return"].append(eq[-1] - 1)
        out["sharpe"].append(r.mean() / r.std(ddof=1) * np.sqrt(PPY))
        out["max_drawdown"].append((eq / np.maximum.accumulate(np.r_[1.0, eq])[1:] - 1).min())
    return out


def vbt_portfolio(vbt: Any, o: np.ndarray, c: np.ndarray, pos: np.ndarray, fee: float) -> Any:
    """``from_signals`` with next-open fills: pos (T, K) decided at the close of each bar."""
    held = np.vstack([np.zeros((1, pos.shape[1]), bool), pos[:-1]])
    before = np.vstack([np.zeros((1, pos.shape[1]), bool), held[:-1]])
    return vbt.Portfolio.from_signals(
        close=c[:, None], entries=held & ~before, exits=~held & before, price=o[:, None],
        size=np.inf, fees=fee, init_cash=1.0, freq="1min",
    )  # fmt: skip


def vbt_pipeline(vbt: Any, o: np.ndarray, c: np.ndarray, fast: np.ndarray, slow: np.ndarray,
                 fee: float, chunk: int) -> np.ndarray:  # fmt: skip
    close = pd.Series(c)
    out = []
    spans = np.unique(np.r_[fast, slow])
    ma = vbt.MA.run(close, window=list(spans), ewm=True)
    by = {int(n): ma.ma.iloc[:, i].to_numpy() for i, n in enumerate(spans)}
    for start in range(0, fast.size, chunk):
        fs, ss = fast[start : start + chunk], slow[start : start + chunk]
        pos = np.column_stack([by[int(f)] > by[int(s)] for f, s in zip(fs, ss, strict=True)])
        pf = vbt_portfolio(vbt, o, c, pos, fee)
        out.append(np.asarray(pf.total_return()))
        pf.sharpe_ratio()
        pf.max_drawdown()
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--bars", type=int, default=1_000_000)
    ap.add_argument("--fasts", default="5:55:5", help="start:stop:step of fast spans")
    ap.add_argument("--slows", default="60:560:50", help="start:stop:step of slow spans")
    ap.add_argument("--fee-bps", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--vbt-pairs", type=int, default=10)
    ap.add_argument("--vbt-chunk", type=int, default=5)
    ap.add_argument("--check", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    fast, slow = ema_grid(
        range(*map(int, args.fasts.split(":"))), range(*map(int, args.slows.split(":")))
    )
    pairs = fast.size
    d = candles(0, args.bars)
    o, c = d["open"], d["close"]
    fee = args.fee_bps * 1e-4
    work = args.bars * pairs
    print(
        f"{args.bars:,} 1-minute candles x {pairs} EMA pairs, fee {args.fee_bps} bps",
        file=sys.stderr,
    )

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def squall(threads: int) -> dict:
        return sweep(o, c, fast, slow, fee_bps=args.fee_bps, periods_per_year=PPY, threads=threads)

    t = time.perf_counter()
    squall(1)
    first = time.perf_counter() - t
    squall(args.threads)  # its chunk shape compiles once too
    tracemalloc.start()
    sq1_t, sq = _best(lambda: squall(1), args.repeats)
    sqn_t, sqn = _best(lambda: squall(args.threads), args.repeats)
    py_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    if not np.array_equal(sq["trades"], sqn["trades"]):
        raise AssertionError("the threaded sweep disagrees with the one-thread sweep")
    sq_t = min(sq1_t, sqn_t)

    np_t, npres = _best(lambda: numpy_sweep(o, c, fast, slow, fee), 1)

    import vectorbt as vbt

    k = min(args.vbt_pairs, pairs)
    vbt_pipeline(vbt, o[:5000], c[:5000], fast[:2], slow[:2], fee, args.vbt_chunk)  # warm numba
    vb_t, _ = _best(lambda: vbt_pipeline(vbt, o, c, fast[:k], slow[:k], fee, args.vbt_chunk), 1)

    # same signals -> same total return (the convention check)
    # the slowest pairs (fewest trades): thousands of 10 bp round trips take the fast ones to ~0
    idx = np.arange(pairs)[-min(args.check, pairs) :]
    pos = np.column_stack(
        [ema_crossover(c, int(fast[i]), int(slow[i]), long_only=True) > 0 for i in idx]
    )
    vb_same = np.asarray(vbt_portfolio(vbt, o, c, pos, fee).total_return())
    growth = 1 + sq["total_return"][idx]
    agree = float(np.max(np.abs((1 + vb_same) - growth) / growth))

    rates = {"squall": work / sq_t, "numpy": work / np_t, "vectorbt": args.bars * k / vb_t}
    print(f"\n{'implementation':<22}{'seconds':>10}{'M candle-params/s':>20}")
    for label, secs in (("squall, 1 thread", sq1_t), (f"squall, {args.threads} threads", sqn_t)):
        print(
            f"{label:<22}{secs:>10.3f}{work / secs / 1e6:>20.1f}"
            f"   vs NumPy {np_t / secs:.2f}x, vs vectorbt {work / secs / rates['vectorbt']:.0f}x"
        )
    print(f"{'(first call)':<22}{first:>10.2f}   compile included, 1 thread")
    print(f"{'NumPy/pandas':<22}{np_t:>10.3f}{rates['numpy'] / 1e6:>20.1f}")
    print(f"{'vectorbt (' + str(k) + ' pairs)':<22}{vb_t:>10.3f}{rates['vectorbt'] / 1e6:>20.1f}")
    vs_vbt, vs_np = rates["squall"] / rates["vectorbt"], rates["squall"] / rates["numpy"]
    mem_gb = rss / 1024**2
    checks = [
        (f"squall / vectorbt = {vs_vbt:.1f}x (target >= 100x)", vs_vbt >= 100),
        (f"squall / NumPy = {vs_np:.2f}x (target >= 3x)", vs_np >= 3),
        (
            f"peak RSS {mem_gb:.2f} GB (was {rss0 / 1024**2:.2f} GB before; target < 2 GB), "
            f"Python peak {py_peak / 1e6:.1f} MB",
            mem_gb < 2.0,
        ),
        (
            f"vectorbt total return on squall's signals: max rel diff {agree:.1e} (<= 1e-9)",
            agree <= 1e-9,
        ),
    ]
    drift = float(np.max(np.abs(np.asarray(npres["total_return"]) - sq["total_return"])))
    print(
        "(NumPy baseline uses pandas' unseeded ewm: total returns differ from squall's "
        f"by up to {drift:.2g})"
    )
    ok = True
    for text, passed in checks:
        ok &= passed
        print(f"{'PASS' if passed else 'FAIL'}  {text}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
