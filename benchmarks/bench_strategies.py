"""Strategy authoring: declarative sweeps vs the built-in kernel and vectorbt; portfolios vs pandas.

What is measured (one run, three comparisons, ratios printed with PASS/FAIL)
----------------------------------------------------------------------------
1. **Declarative spec vs the built-in kernel.** The spec ``ema:{fast} > ema:{slow}`` /
   ``ema:{fast} <= ema:{slow}`` (long/flat, all-in, fee ``--fee-bps``) over ``--bars``
   (1,000,000) synthetic 1-minute candles and a 10 x 10 grid (100 parameter sets):
   :func:`compute.strategy.grid.sweep_spec` (rules compiled, indicators once, one segmented
   loop) against :func:`compute.backtest.sweep.sweep` (the hand-fused EMA-crossover kernel) on
   the same candles and grid. Target: the spec at >= 0.5x the built-in's speed. Both warm
   (compiled), best of ``--repeats``; the first calls (compile included) are printed apart.
   Agreement: total returns and trade counts of the two must match.
2. **Declarative spec vs vectorbt** ``Portfolio.from_signals`` **on the same signals**: the
   spec's own positions for ``--vbt-sets`` sets, turned into entries/exits one bar later
   (next-open fills), ``price=open, size=inf, fees=...``, plus total return, Sharpe and max
   drawdown; vectorbt's rate (candle-sets/s) against the whole spec sweep's (which also
   computes its indicators and signals). Target >= 50x. Agreement: vectorbt's total returns
   equal the spec sweep's to 1e-9. Skipped cleanly when vectorbt is not installed
   (``pip install -e '.[bench]'``).
3. **A 20-coin daily portfolio, monthly rebalancing, full history**: momentum rank over 30
   days, top 5 equally weighted, fee 10 bps per leg, next-open execution, the union of the
   coins' timestamps (coins listed later enter when they have a bar and 30 days of history):
   :func:`compute.backtest.portfolio.run_portfolio` (alignment, targets and the run) against a
   pandas implementation of the same rules (wide frames, ``rank(axis=1)``, one vectorised
   holding period per rebalance). Target >= 10x. Agreement: equity curves equal to 1e-9.

   Data: the seven real daily files of ``../shared/data`` (BTC, ETH, BNB, XRP, ADA, DOGE, SOL;
   the open last bar dropped) and 13 coins synthesised from them: coin ``k`` (1..13) takes real
   coin ``(k - 1) mod 7``'s daily close-to-close log returns rotated by ``97 k`` days and
   scaled by ``0.6 + 0.03 k``, its bars' open/high/low-to-close ratios at the same rotated
   index (so OHLC stay consistent), and its timestamps (so it lists with its source).

Run (repository root)::

    python -m benchmarks.bench_strategies
    python -m benchmarks.bench_strategies --bars 200000 --vbt-sets 5
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.bench_indicators import candles
from compute.backtest.portfolio import (
    PortfolioConfig,
    Schedule,
    align,
    momentum_targets,
    run_portfolio,
)
from compute.backtest.sweep import ema_grid, sweep
from compute.strategy.compiler import spec_positions
from compute.strategy.grid import expand, sweep_spec
from compute.strategy.spec import parse_spec

PPY_1M = 525_600.0
REAL = ("BTC", "ETH", "BNB", "XRP", "ADA", "DOGE", "SOL")
SPEC = {"long_entry": "ema:{fast} > ema:{slow}", "long_exit": "ema:{fast} <= ema:{slow}"}


def _best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


# --- 1 and 2: sweeps ----------------------------------------------------------------------


def bench_sweeps(args: argparse.Namespace) -> list[tuple[str, bool | None]]:
    fasts, slows = list(range(5, 55, 5)), list(range(60, 560, 50))
    fast, slow = ema_grid(fasts, slows)
    d = candles(0, args.bars)
    spec = parse_spec(SPEC)
    grid = {"fast": fasts, "slow": slows}
    sets = fast.size
    work = args.bars * sets
    print(f"\n1. {args.bars:,} 1-minute candles x {sets} parameter sets, fee {args.fee_bps} bps")

    def builtin() -> dict:
        return sweep(d["open"], d["close"], fast, slow, fee_bps=args.fee_bps,
                     periods_per_year=PPY_1M)  # fmt: skip

    def declarative() -> dict:
        return sweep_spec(spec, grid, d, fee_bps=args.fee_bps, periods_per_year=PPY_1M)

    t = time.perf_counter()
    builtin()
    first_b = time.perf_counter() - t
    t = time.perf_counter()
    declarative()
    first_s = time.perf_counter() - t
    tb, ref = _best(builtin, args.repeats)
    ts, out = _best(declarative, args.repeats)
    agree = bool(np.array_equal(out["trades"], ref["trades"])) and float(
        np.max(np.abs(out["total_return"] - ref["total_return"]))) <= 1e-9  # fmt: skip
    ratio = tb / ts
    print(f"{'implementation':<34}{'seconds':>10}{'M candle-sets/s':>18}{'first call':>12}")
    print(
        f"{'built-in kernel (sweep.sweep)':<34}{tb:>10.3f}{work / tb / 1e6:>18.1f}{first_b:>12.2f}"
    )
    print(
        f"{'declarative spec (sweep_spec)':<34}{ts:>10.3f}{work / ts / 1e6:>18.1f}{first_s:>12.2f}"
    )
    print(f"   path: {out['path']}; trades and total returns equal to the built-in: {agree}")
    checks: list[tuple[str, bool | None]] = [
        (f"declarative / built-in speed = {ratio:.2f}x (target >= 0.5x)", ratio >= 0.5),
        ("declarative sweep agrees with the built-in (trades, total return 1e-9)", agree),
    ]
    checks += bench_vectorbt(args, d, spec, fasts, slows, work / ts, out)
    return checks


def bench_vectorbt(args: argparse.Namespace, d: dict, spec: Any, fasts: list, slows: list,
                   spec_rate: float, out: dict) -> list[tuple[str, bool | None]]:  # fmt: skip
    print(f"\n2. vectorbt from_signals on the spec's own signals ({args.vbt_sets} sets)")
    try:
        import vectorbt as vbt
    except ImportError:
        print("   vectorbt is not installed (pip install -e '.[bench]'): skipped")
        return [("vectorbt comparison skipped (not installed)", None)]
    from benchmarks.bench_backtest import vbt_portfolio

    sets, _ = expand(spec, {"fast": fasts, "slow": slows})
    k = min(args.vbt_sets, len(sets))
    # the sets with the fewest trades: with thousands of 10 bp round trips equity reaches
    # ~1e-5 and vectorbt stops filling orders below its minimum size, so it would disagree
    picks = sorted(np.argsort(out["trades"], kind="stable")[:k].tolist())
    held = np.column_stack([spec_positions(sets[i], d).positions > 0 for i in picks])
    o, c, fee = d["open"], d["close"], args.fee_bps * 1e-4
    warm = vbt_portfolio(vbt, o[:5000], c[:5000], held[:5000, :2], fee)  # numba compiles
    warm.total_return(), warm.sharpe_ratio(), warm.max_drawdown()

    def run() -> np.ndarray:
        pf = vbt_portfolio(vbt, o, c, held, fee)
        total = np.asarray(pf.total_return())
        pf.sharpe_ratio()
        pf.max_drawdown()
        return total

    tv, total = _best(run, 1)
    rate = args.bars * k / tv
    growth = 1 + out["total_return"][picks]
    diff = float(np.max(np.abs((1 + total) - growth) / growth))
    ratio = spec_rate / rate
    print(f"   vectorbt: {tv:.3f} s for {k} sets = {rate / 1e6:.2f} M candle-sets/s; "
          f"declarative sweep {spec_rate / 1e6:.1f} M (signals included)")  # fmt: skip
    return [
        (f"declarative / vectorbt from_signals = {ratio:.0f}x (target >= 50x)", ratio >= 50),
        (f"vectorbt total return on the spec's signals: max rel diff {diff:.1e} (<= 1e-9)",
         diff <= 1e-9),
    ]  # fmt: skip


# --- 3: the portfolio -------------------------------------------------------------------------


def load_real(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for coin in REAL:
        path = next(folder.glob(f"binance_spot_{coin}USDT_1d_*.csv"))
        frame = pd.read_csv(path).iloc[:-1]  # the last bar is still open (SOURCES.md)
        ts = pd.to_datetime(frame["timestamp"], utc=True).dt.as_unit("s").astype("int64")
        out[coin] = {k: frame[k].to_numpy(np.float64) for k in ("open", "high", "low", "close")}
        out[coin]["ts"] = ts.to_numpy(np.int64)
    return out


def synthesise(real: dict[str, dict[str, np.ndarray]], count: int) -> dict[str, dict]:
    """The documented transformations of the module docstring."""
    names = list(real)
    out = {}
    for k in range(1, count + 1):
        src = real[names[(k - 1) % len(names)]]
        c = src["close"]
        logr = np.diff(np.log(c))
        shift = (97 * k) % logr.size
        rot = np.roll(logr, -shift) * (0.6 + 0.03 * k)
        close = c[0] * np.exp(np.concatenate([[0.0], np.cumsum(rot)]))
        idx = np.roll(np.arange(c.size), -shift)
        ratios = {f: src[f][idx] / c[idx] for f in ("open", "high", "low")}
        bar = {f: close * ratios[f] for f in ratios}
        bar["high"] = np.maximum.reduce([bar["high"], bar["open"], close])
        bar["low"] = np.minimum.reduce([bar["low"], bar["open"], close])
        out[f"SYN{k:02d}"] = {**bar, "close": close, "ts": src["ts"]}
    return out


def pandas_portfolio(coins: dict[str, dict], lookback: int, top_k: int, fee: float) -> pd.Series:
    """The same rules with pandas: wide frames on the union of dates, ranks per row, month-end
    decisions, one vectorised holding period per rebalance. Returns the equity curve."""
    frames = {c: pd.DataFrame({k: v[k] for k in ("open", "close")},
                              index=pd.to_datetime(v["ts"], unit="s"))
              for c, v in coins.items()}  # fmt: skip
    close = pd.concat({c: f["close"] for c, f in frames.items()}, axis=1)
    open_ = pd.concat({c: f["open"] for c, f in frames.items()}, axis=1)
    present = close.notna()
    mark = close.ffill().fillna(0.0)
    prev_mark = mark.shift(1).fillna(0.0)
    p_open = open_.where(present, prev_mark)
    p_close = close.where(present, prev_mark)
    score = close / close.shift(lookback) - 1.0  # NaN unless present at t and t - lookback
    rank = score.rank(axis=1, ascending=False, method="first")
    weights = (rank <= top_k).astype(float) / top_k
    month = close.index.to_period("M")
    decide = pd.Series(month[1:] != month[:-1], index=close.index[:-1]).reindex(
        close.index, fill_value=False)  # fmt: skip
    executions = np.flatnonzero(decide.shift(1, fill_value=False).to_numpy())
    equity = pd.Series(1.0, index=close.index)
    cash, units = 1.0, pd.Series(0.0, index=close.columns)
    bounds = [*executions, len(close)]
    if bounds[0] > 0:
        equity.iloc[: bounds[0]] = 1.0
    for start, end in itertools.pairwise(bounds):
        po = p_open.iloc[start]
        held = units * po
        e_open = cash + held.sum()
        w = weights.iloc[start - 1]
        legs = present.iloc[start]
        e_net = e_open
        for _ in range(50):  # the post-cost equity: E' = E_o - fee sum |w E' - N|
            nxt = e_open - fee * (w * e_net - held)[legs].abs().sum()
            if nxt == e_net:
                break
            e_net = nxt
        orders = (w * e_net - held).where(legs, 0.0)
        units = (held + orders).div(po.where(legs, 1.0)).where(legs, units)
        cash -= orders.sum() + fee * orders.abs().sum()
        period = p_close.iloc[start:end]
        equity.iloc[start:end] = cash + period.mul(units, axis=1).sum(axis=1)
    return equity


def bench_portfolio(args: argparse.Namespace) -> list[tuple[str, bool | None]]:
    root = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not root.is_dir():
        print("\n3. ../shared/data is absent: portfolio comparison skipped")
        return [("portfolio comparison skipped (no real data)", None)]
    real = load_real(root)
    coins = {**real, **synthesise(real, args.coins - len(real))}
    lookback, top_k, fee_bps = 30, 5, 10.0
    made = len(coins) - len(real)
    print(f"\n3. {len(coins)} coins daily ({len(real)} real, {made} synthesised), momentum "
          f"{lookback} d, top {top_k}, monthly, fee {fee_bps:g} bps")  # fmt: skip

    def squall() -> Any:
        aligned = align(coins)
        targets = momentum_targets(aligned, lookback, top_k)
        return run_portfolio(aligned, targets, Schedule("monthly"),
                             PortfolioConfig(fee_bps=fee_bps))  # fmt: skip

    t = time.perf_counter()
    squall()
    first = time.perf_counter() - t
    tq, res = _best(squall, args.repeats * 3)
    tp, eq = _best(lambda: pandas_portfolio(coins, lookback, top_k, fee_bps * 1e-4), args.repeats)
    diff = float(np.max(np.abs(res.equity["equity"] - eq.to_numpy()) / eq.to_numpy()))
    ratio = tp / tq
    bars = res.metrics["bars"]
    print(f"   squall {tq * 1e3:.1f} ms (first call {first:.2f} s), pandas {tp * 1e3:.1f} ms; "
          f"{bars} bars, {res.metrics['rebalances']} rebalances, total return "
          f"{res.metrics['total_return']:.2f}")  # fmt: skip
    return [
        (f"portfolio squall / pandas = {ratio:.1f}x (target >= 10x)", ratio >= 10),
        (f"portfolio equity vs pandas: max rel diff {diff:.1e} (<= 1e-9)", diff <= 1e-9),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--bars", type=int, default=1_000_000)
    ap.add_argument("--fee-bps", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--vbt-sets", type=int, default=10)
    ap.add_argument("--coins", type=int, default=20)
    args = ap.parse_args(argv)
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    print(f"load average before the run: {load}", file=sys.stderr)
    checks = bench_sweeps(args) + bench_portfolio(args)
    print()
    ok = True
    for text, passed in checks:
        ok &= passed is not False
        print(f"{'SKIP' if passed is None else 'PASS' if passed else 'FAIL'}  {text}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
