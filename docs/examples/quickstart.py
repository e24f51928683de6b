"""squall from Python, end to end, against a running platform (``make run``).

    python docs/examples/quickstart.py [--url http://127.0.0.1:8000] [--out var/quickstart]

Reads the stored candles, computes indicators, runs a backtest, a walk-forward and a stress
simulation (waiting for it with a progress line), a risk report and a correlation matrix,
lists and compares runs, saves the backtest's HTML report and one chart, and shows what an
error looks like. Every call goes through ``squall.client.Client`` (HTTP only). Needs daily
candles of two coins, e.g. ``squall import ../shared/data/binance_spot_BTCUSDT_1d_*.csv``.
The test suite runs it against a real ``squall up`` (tests/serve_app/test_platform.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from squall.client import Client
from squall.errors import NotFoundError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("SQUALL_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--coin", default="BTC")
    parser.add_argument("--other", default="ETH", help="a second coin for correlation")
    parser.add_argument("--interval", default="1d")
    parser.add_argument("--out", type=Path, default=Path("var/quickstart"))
    args = parser.parse_args(argv)
    coin, interval = args.coin, args.interval
    args.out.mkdir(parents=True, exist_ok=True)

    with Client(args.url, timeout=300) as api:
        health = api.health()
        print(f"squall {health['version']} at {args.url}: {health['status']}")
        coverage = api.coins()
        print(coverage[["coin", "interval", "first_ts", "last_ts", "count"]].to_string(index=False))

        # candles and indicators: pandas frames indexed by UTC bar open time
        candles = api.candles(coin, interval, start="2024-01-01", end="2024-12-31")
        last = candles["close"].iloc[-1]
        print(f"{coin} {interval} 2024: {len(candles)} bars, last close {last:,.2f}")
        ind = api.indicators(coin, interval, "ema:20,rsi:14", start="2024-01-01", end="2024-12-31")
        print(f"RSI(14) on {ind.index[-1]:%Y-%m-%d}: {ind['rsi_14'].iloc[-1]:.2f}")

        # a backtest: metrics, the full equity curve and the trades
        bt = api.backtest(coin, interval, "ema_cross", {"fast": 12, "slow": 26}, fee_bps=10)
        m = bt.metrics
        print(
            f"backtest {bt.run_id}: total return {m['total_return']:.2%}, "
            f"Sharpe {m['sharpe']:.2f}, max drawdown {m['max_drawdown']:.2%}, "
            f"{len(bt.trades)} trades, final equity {bt.equity['equity'].iloc[-1]:.4f}"
        )
        other = api.backtest(coin, interval, "ema_cross", {"fast": 20, "slow": 60}, fee_bps=10)

        wf = api.walkforward(
            coin,
            interval,
            "ema_cross",
            {"fast": [5, 10, 20], "slow": [50, 100]},
            train_bars=730,
            test_bars=180,
        )
        print(
            f"walk-forward {wf.run_id}: {len(wf.folds)} folds, OOS Sharpe "
            f"{wf.metrics['sharpe']:.2f}, fading: {wf.decay['fading']}"
        )

        # a stress simulation of the strategy: queued on the workers, followed here
        def progress(done: int, total: int, unit: str) -> None:
            print(f"\r  simulating: {done:,}/{total:,} {unit}", end="", flush=True)

        sim = api.simulate(
            backtest={"coin": coin, "interval": interval, "strategy": "ema_cross"},
            paths=200_000,
            horizon=365,
            seed=7,
            mode="async",
            on_progress=progress,
        )
        print(
            f"\nsimulation {sim.run_id}: VaR 99% {sim.var_99:.2%}, ES 99% {sim.es_99:.2%}, "
            f"ruin probability {sim.result['ruin_probability']:.2%}"
        )

        risk = api.risk_report([coin, args.other], interval=interval, window=365)
        print(risk.var[risk.var["level"] == 0.99].to_string(index=False))
        print(api.correlation([coin, args.other], interval=interval).round(3).to_string())

        # the registry: list, compare, report
        runs = api.runs(kind="backtest", limit=5)
        print(f"{len(runs)} recent backtests; newest {runs.index[0]}")
        metrics, equity = api.compare([bt.run_id, other.run_id])
        print(metrics.loc[["total_return", "sharpe", "max_drawdown"]].to_string())
        ends = equity.iloc[-1].round(3).to_dict()
        print(f"equity of both on one axis: {equity.shape[0]} points, last {ends}")
        report = args.out / f"backtest-{bt.run_id}.html"
        report.write_text(api.report_html(bt.run_id), encoding="utf-8")
        (args.out / f"backtest-{bt.run_id}-equity.png").write_bytes(api.chart(bt.run_id, "equity"))
        print(f"report: {report} (and {args.url}/runs/{bt.run_id}/report, dashboard {args.url}/ui)")

        try:
            api.run("no-such-run")
        except NotFoundError as exc:
            print(f"errors are exceptions: {exc.status} {exc.code}: {exc.message}")
    print("quickstart finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
