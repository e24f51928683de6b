"""Indicator throughput: JAX kernels vs the NumPy references vs pandas, in one run.

What is measured
----------------
Every indicator, label and signal of ``SPEC`` (18 items, 25 columns) over ``--bars``
(1,000,000) synthetic 1-minute candles:

(a) one coin: ``compute.indicators.pipeline.compute_indicators`` (JAX, warm; the first call, compile
    included, is printed on its own), ``compute_indicators_reference`` (the slow NumPy
    references) and a pandas baseline (``rolling``, ``ewm``, ``groupby``: the natural pandas
    implementation of each item, written in :func:`pandas_indicators`);
(b) ``--coins`` (50) coins: JAX on ``(K, T)`` batches of ``--group`` coins per call (default 2,
    the chunk ``compute_indicators`` picks for 1M bars, so results come back without a copy)
    vs pandas coin by coin. The references are not run on 50 coins (minutes); their figure is
    the one-coin time x 50, marked *est.*;
(c) with ``--breakdown``: each spec item alone on one coin (JAX).

50 x 1M float64 is 400 MB per array, so coins are generated (untimed) group by group and
outputs are dropped after each call: memory stays ~2 GB and the timed work is the same as a
50-coin batch. Times are wall clock, best of ``--repeats`` (one coin) or one pass (50 coins).
The run checks that the implementations agree (JAX vs reference, JAX vs pandas where the
definitions coincide) and prints ratios measured in this run. Target: JAX >= 5x pandas on the
50-coin batch.

The allocator (``--malloc``): by default the benchmark re-executes itself with the glibc
tunables of :mod:`serve_app.allocator` (one arena, no mmap, no trimming, huge pages), the
settings a kernel-running worker gets: XLA:CPU allocates fresh buffers on every call, and with
glibc's defaults every large one page-faults its memory in again. ``--malloc default``
measures without (unless ``GLIBC_TUNABLES`` is already set). Everything in the process, pandas
included, runs under the same setting. A ``GLIBC_TUNABLES`` already in the environment wins
over ours, name by name.

Run (repository root)::

    python -m benchmarks.bench_indicators                  # 1M bars, 1 + 50 coins
    python -m benchmarks.bench_indicators --malloc default
    python -m benchmarks.bench_indicators --bars 200000 --coins 10 --breakdown
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from compute.indicators.pipeline import compute_indicators, compute_indicators_reference
from compute.indicators.registry import parse_indicator_spec
from serve_app import allocator

SPEC = (
    "sma:20,ema:20,rsi:14,macd:12:26:9,atr:14,bb:20:2,zscore:20,vwap:20,svwap,ret,logret,"
    "rvol:20:525600,vov:20:20:525600,vreg:20:250,trend:20:14:5:0.1,"
    "ema_cross:12:26,rsi_mr:14:30:70,bb_break:20:2"
)
PPY = 525_600.0  # 1-minute bars
KEYS = ("open", "high", "low", "close", "volume", "ts")


def candles(coin: int, bars: int, seed: int = 7) -> dict[str, np.ndarray]:
    """A geometric random walk with consistent OHLC and volume; one RNG stream per coin."""
    rng = np.random.default_rng([seed, coin])
    close = 60_000.0 * np.exp(np.cumsum(rng.normal(0.0, 8e-4, bars)))
    close = np.round(close, 2)
    open_ = np.concatenate([[close[0]], close[:-1]])
    wick = np.abs(rng.normal(0.0, 4e-4, (2, bars)))
    high = np.round(np.maximum(open_, close) * (1 + wick[0]), 2)
    low = np.round(np.minimum(open_, close) * (1 - wick[1]), 2)
    volume = np.round(rng.lognormal(0.0, 1.0, bars), 6)
    ts = 1_704_067_200 + 60 * np.arange(bars, dtype=np.int64)
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume, "ts": ts}


# --- the pandas baseline ------------------------------------------------------------------


def _seeded_ewm(s: pd.Series, alpha: float, n: int, start: int = 0) -> pd.Series:
    """pandas EMA seeded with the SMA of the first n values (NaN before): ewm(adjust=False)."""
    seeded = s.copy()
    seeded.iloc[: start + n - 1] = np.nan
    seeded.iloc[start + n - 1] = s.iloc[start : start + n].mean()
    return seeded.ewm(alpha=alpha, adjust=False).mean()


def _ema(c: pd.Series, n: int) -> pd.Series:
    return _seeded_ewm(c, 2.0 / (n + 1), n)


def _rsi(c: pd.Series, n: int) -> pd.Series:
    delta = c.diff()
    gain = _seeded_ewm(delta.clip(lower=0), 1.0 / n, n, 1)
    loss = _seeded_ewm(-delta.clip(upper=0), 1.0 / n, n, 1)
    total = gain + loss
    return (100 * gain / total).where(total != 0, 50.0).where(gain.notna())


def _atr(h: pd.Series, low: pd.Series, c: pd.Series, n: int) -> pd.Series:
    prev = c.shift(1)
    tr = pd.concat([h - low, (h - prev).abs(), (low - prev).abs()], axis=1).max(
        axis=1, skipna=False
    )
    return _seeded_ewm(tr, 1.0 / n, n, 1)


def _signal(long: pd.Series, short: pd.Series) -> np.ndarray:
    return np.select([long.to_numpy(), short.to_numpy()], [1, -1], 0).astype(np.int8)


def pandas_indicators(x: dict[str, np.ndarray]) -> dict[str, Any]:
    """Every item of SPEC the way a pandas user would write it, for one coin."""
    c, h, low, v = (pd.Series(x[k]) for k in ("close", "high", "low", "volume"))
    out: dict[str, Any] = {"sma": c.rolling(20).mean(), "ema": _ema(c, 20), "rsi": _rsi(c, 14)}
    macd = _ema(c, 12) - _ema(c, 26)
    signal = _seeded_ewm(macd, 2.0 / 10, 9, 25)
    out |= {
        "macd": macd,
        "macd_signal": signal,
        "macd_hist": macd - signal,
        "atr": _atr(h, low, c, 14),
    }
    mid, std = c.rolling(20).mean(), c.rolling(20).std(ddof=0)
    upper, lower = mid + 2 * std, mid - 2 * std
    out |= {"bb_mid": mid, "bb_upper": upper, "bb_lower": lower}
    out |= {"bb_pctb": (c - lower) / (upper - lower), "bb_width": (upper - lower) / mid}
    out["zscore"] = (c - c.rolling(20).mean()) / c.rolling(20).std(ddof=0)
    tp = (h + low + c) / 3
    out["vwap"] = (tp * v).rolling(20).sum() / v.rolling(20).sum()
    day = pd.Series(x["ts"] // 86_400)
    out["svwap"] = (tp * v).groupby(day).cumsum() / v.groupby(day).cumsum()
    out["ret"] = c.pct_change()
    logret = np.log(c / c.shift(1))
    out["logret"] = logret
    rv = logret.rolling(20).std()
    out["rvol"] = rv * math.sqrt(PPY)
    out["vov"] = out["rvol"].rolling(20).std()
    base = rv.ewm(span=250, adjust=False)
    mean, sd = base.mean().shift(1), base.std(bias=True).shift(1)
    z = 0.6745
    vreg = np.select([(rv > mean + z * sd).to_numpy(), (rv < mean - z * sd).to_numpy()], [2, 0], 1)
    out["vreg"] = np.where(mean.isna().to_numpy() | rv.isna().to_numpy(), -1, vreg).astype(np.int8)
    e20, atr14 = out["ema"], out["atr"]
    score = (e20 - e20.shift(5)) / (5 * atr14)
    out["trend_score"] = score
    trend = np.select([(score > 0.1).to_numpy(), (score < -0.1).to_numpy()], [2, 0], 1)
    out["trend"] = np.where(score.isna().to_numpy(), -1, trend).astype(np.int8)
    diff = _ema(c, 12) - _ema(c, 26)
    out["ema_cross"] = _signal(diff > 0, diff < 0)
    out["rsi_mr"] = _signal(out["rsi"] < 30, out["rsi"] > 70)
    out["bb_break"] = _signal(c > upper, c < lower)
    return out


# --- timing helpers ----------------------------------------------------------------------


def _timed(fn: Callable[[], Any], repeats: int = 1) -> tuple[float, Any]:
    best, result = math.inf, None
    for _ in range(repeats):
        result = None
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


ZERO_CROSSING = ("macd", "zscore", "bb_pctb", "ret", "logret", "trend_score")


def _max_rel(a: np.ndarray, b: np.ndarray, floor: float) -> float:
    """Max |a - b| / max(|b|, floor); inf when the NaN patterns differ."""
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return math.inf
    ok = ~np.isnan(b)
    if not ok.any():
        return 0.0
    return float(np.max(np.abs(a[ok] - b[ok]) / np.maximum(np.abs(b[ok]), floor)))


def check_agreement(
    jax_out: dict[str, np.ndarray],
    ref_out: dict[str, np.ndarray],
    pd_out: dict[str, Any],
    price: float,
) -> list[str]:
    """How far apart the implementations are (the test-suite rule: relative, with outputs that
    cross zero measured against their natural scale, the price for MACD, 1 otherwise)."""
    worst, labels_diff = 0.0, 0
    for k, a in jax_out.items():
        if a.dtype == np.int8:
            labels_diff += int((a != ref_out[k]).sum())
            continue
        scale = 0.0
        if k.startswith(ZERO_CROSSING):
            scale = 1e-3 * price if k.startswith("macd") else 1.0
        worst = max(worst, _max_rel(a, ref_out[k], max(scale, 1e-300)))
    pairs = {
        "sma_20": "sma",
        "bb_upper_20_2": "bb_upper",
        "vwap_20": "vwap",
        "svwap": "svwap",
        "rvol_20_525600": "rvol",
    }
    errs = {
        k: _max_rel(jax_out[k], np.asarray(pd_out[v], dtype=float), 1e-300)
        for k, v in pairs.items()
    }
    return [
        f"JAX vs NumPy reference: max relative error {worst:.1e} (float outputs), "
        f"{labels_diff} label/signal differences",
        "JAX vs pandas, same definitions: " + ", ".join(f"{k} {e:.0e}" for k, e in errs.items()),
        "  (pandas' rolling std keeps running sums of squares: ~1e-7..1e-10 at these prices)",
    ]


def batch_times(args: argparse.Namespace) -> tuple[float, float]:
    """Seconds for all coins, JAX (compile excluded) and pandas; data generation untimed."""
    jax_k = pd_k = 0.0
    for lo in range(0, args.coins, args.group):
        data = [candles(c, args.bars) for c in range(lo, min(lo + args.group, args.coins))]
        stacked = [*(np.stack([d[k] for d in data]) for k in KEYS[:5]), data[0]["ts"]]

        def run(x: list[np.ndarray] = stacked) -> dict[str, np.ndarray]:
            chunk = args.series_per_call
            return compute_indicators(SPEC, *x, series_per_call=chunk, workers=args.workers)

        if lo == 0:
            run()  # compile the batch shape: not timed
        seconds, _ = _timed(run)
        jax_k += seconds
        for d in data:
            seconds, _ = _timed(lambda d=d: pandas_indicators(d))
            pd_k += seconds
    return jax_k, pd_k


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--bars", type=int, default=1_000_000)
    ap.add_argument("--coins", type=int, default=50)
    ap.add_argument("--group", type=int, default=2, help="coins per compute_indicators call")
    ap.add_argument("--series-per-call", type=int, default=None, help="compute_indicators chunk")
    ap.add_argument("--workers", type=int, default=1, help="compute_indicators threads")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--malloc", choices=["tuned", "default"], default="tuned")
    ap.add_argument("--breakdown", action="store_true", help="also time each spec item alone")
    ap.add_argument("--skip-reference", action="store_true")
    args = ap.parse_args(argv)
    if args.malloc == "tuned":
        allocator.reexec_with_tunables()
    tuned = allocator.active()
    requests = parse_indicator_spec(SPEC)
    n_out = sum(len(r.spec.outputs) for r in requests)
    print(f"spec: {SPEC}")
    print(
        f"  {len(requests)} items, {n_out} output columns, {args.bars:,} 1-minute candles per coin"
    )
    alloc = f"GLIBC_TUNABLES={os.environ['GLIBC_TUNABLES']}" if tuned else "glibc defaults"
    print(f"  allocator: {alloc}\n")

    one = candles(0, args.bars)

    def jax_one() -> dict[str, np.ndarray]:
        return compute_indicators(
            SPEC, *(one[k] for k in KEYS), series_per_call=args.series_per_call
        )

    first, _ = _timed(jax_one)
    jax_1, jax_out = _timed(jax_one, args.repeats)
    pd_1, pd_out = _timed(lambda: pandas_indicators(one), args.repeats)
    ref_1, ref_out = math.nan, None
    if not args.skip_reference:
        ref_1, ref_out = _timed(lambda: compute_indicators_reference(SPEC, *(one[k] for k in KEYS)))
    print(f"(a) one coin, {args.bars:,} bars")
    print(f"    JAX (warm)       {jax_1:8.3f} s   first call {first:.2f} s (compile + run)")
    print(f"    NumPy reference  {ref_1:8.3f} s   {ref_1 / jax_1:6.1f}x the JAX time")
    print(f"    pandas           {pd_1:8.3f} s   {pd_1 / jax_1:6.1f}x the JAX time")
    if ref_out is not None:
        for line in check_agreement(jax_out, ref_out, pd_out, float(np.median(one["close"]))):
            print("    " + line)
    del jax_out, ref_out, pd_out

    jax_k, pd_k = batch_times(args)
    total = args.coins * args.bars
    print(f"\n(b) {args.coins} coins x {args.bars:,} bars = {total / 1e6:,.0f} M candles")
    print(f"    JAX in calls of {args.group} coins ({args.workers} thread), pandas coin by coin")
    print(f"    JAX batched      {jax_k:8.3f} s   {total / jax_k / 1e6:6.1f} M candles/s")
    print(f"    pandas           {pd_k:8.3f} s   {total / pd_k / 1e6:6.1f} M candles/s")
    print(f"    NumPy reference  {ref_1 * args.coins:8.1f} s   (est.: one coin x {args.coins})")
    ratio = pd_k / jax_k
    print(
        f"    pandas / JAX     {ratio:8.1f}x   (target >= 5x: {'PASS' if ratio >= 5 else 'FAIL'})"
    )
    print(f"    reference / JAX  {ref_1 * args.coins / jax_k:8.1f}x")

    if args.breakdown:
        print(f"\n(c) each item alone, one coin, {args.bars:,} bars, JAX warm")
        for r in requests:
            text = r.text()

            def item(t: str = text) -> dict[str, np.ndarray]:
                return compute_indicators(t, *(one[k] for k in KEYS))

            item()
            seconds, _ = _timed(item, args.repeats)
            print(f"    {text:28s} {seconds * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
