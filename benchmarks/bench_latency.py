"""What a researcher waits for: repeated HTTP requests against ``squall up``, with the peers
measured in the same run on the same data.

Starts the platform the way ``make run`` does (``squall up``: Ray, two Serve replicas, the
warm compute workers), on a fresh SQLite database holding the real BTC daily bars from
``../shared/data`` (imported with ``squall import``) and a fresh compiled-kernel cache, with
ingestion off so nothing else runs. Per case: the first request right after start-up (the
kernel warm-up still running), then, once the warm-up is done, two warm-up requests and
``--requests`` timed ones (p50 and p90 of all of them, never the best); then a restart on the
same kernel cache and the first request of each case again (the cold start a returning user
sees). In the same process, the peers: ``arch``'s ``CircularBlockBootstrap`` for 20k paths
with the same outputs (max drawdown, terminal return), a plain pandas walk-forward loop over
the same folds and grid, pandas ``ewm`` and a pandas EMA-cross backtest on the same candles
read from the same database, and squall's own path kernel in-process for 1M paths.

    python -m benchmarks.bench_latency [--requests 20] [--paths-1m 1000000]

Not part of the test suite (minutes of CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
BTC_FILE = "binance_spot_BTCUSDT_1d_2017-2026.csv"
ETH_FILE = "binance_spot_ETHUSDT_1d_2017-2026.csv"
HORIZON = 365
GRID = {"fast": [5, 10, 20], "slow": [50, 100]}
TRAIN, TEST = 730, 180


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


# ---------------------------------------------------------------------------- the platform
class Platform:
    """``squall up`` in a subprocess on a temporary database; stopped with Ctrl-C (SIGINT)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"sqlite:///{tmp / 'squall.db'}"
        self.env = {
            **os.environ,
            "SQUALL_DATABASE_URL": self.url,
            "SQUALL_API_PORT": str(self.port),
            "SQUALL_DASHBOARD_PORT": str(free_port()),
            "SQUALL_INGEST_ENABLED": "false",
            "SQUALL_COINS": "BTC,ETH",
            "SQUALL_INTERVALS": "1d",
            "SQUALL_JAX_CACHE_DIR": str(tmp / "jax-cache"),
            "SQUALL_LOG_LEVEL": "WARNING",
        }
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def squall(self, *args: str) -> str:
        exe = Path(sys.executable).with_name("squall")
        done = subprocess.run(
            [str(exe), *args], env=self.env, capture_output=True, text=True, check=True
        )
        return done.stdout

    def start(self) -> float:
        exe = Path(sys.executable).with_name("squall")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(exe), "up"],
            env=self.env,
            stdout=open(self.tmp / "up.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 240
        while True:
            try:
                if httpx.get(f"{self.base}/ready", timeout=2).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"squall up did not come up: {(self.tmp / 'up.log').read_text()}"
                )
            time.sleep(0.25)

    def wait_warm(self, limit_s: float = 600.0) -> float:
        """Until every replica's warm-up is done and every worker is warm (the replicas are
        load-balanced: ten answers in a row must say so); returns the seconds waited."""
        t0 = time.perf_counter()
        streak = 0
        while streak < 10:
            body = httpx.get(f"{self.base}/health", timeout=30).json()
            execution = body.get("execution") or {}
            done = (execution.get("warm_up") or {}).get("state") in ("done", "failed")
            workers = execution.get("workers") or []
            warm = all(w.get("warm") for w in workers)
            streak = streak + 1 if done and warm else 0
            if time.perf_counter() - t0 > limit_s:
                log(f"warm-up not finished after {limit_s:.0f} s: {execution}")
                break
            time.sleep(0.3 if streak else 2.0)
        return time.perf_counter() - t0

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


# -------------------------------------------------------------------------------- the peers
def load_candles(url: str) -> pd.DataFrame:
    """The candles as a pandas user reads them: one SQL query into a frame."""
    from sqlalchemy import create_engine

    engine = create_engine(url)
    with engine.connect() as conn:
        frame = pd.read_sql(
            "SELECT ts, open, high, low, close, volume_base FROM candles "
            "WHERE coin = 'BTC' AND interval = '1d' ORDER BY ts",
            conn,
        )
    engine.dispose()
    return frame


def pandas_indicator(url: str) -> str:
    frame = load_candles(url)
    frame["ema_20"] = frame["close"].ewm(span=20, adjust=False, min_periods=20).mean()
    return str(frame[["ts", "close", "ema_20"]].to_json(orient="records"))


def _ema_cross_returns(close: pd.Series, fast: int, slow: int, fee: float) -> pd.Series:
    f = close.ewm(span=fast, adjust=False, min_periods=fast).mean()
    s = close.ewm(span=slow, adjust=False, min_periods=slow).mean()
    pos = (f > s).astype(float).shift(1).fillna(0.0)
    ret = close.pct_change().fillna(0.0)
    return pos * ret - pos.diff().abs().fillna(0.0) * fee


def _sharpe(r: pd.Series) -> float:
    sd = r.std(ddof=1)
    return float(r.mean() / sd * np.sqrt(365)) if sd > 0 else float("-inf")


def pandas_backtest(url: str) -> dict[str, float]:
    frame = load_candles(url)
    r = _ema_cross_returns(frame["close"], 12, 26, 10e-4)
    equity = (1 + r).cumprod()
    return {
        "total_return": float(equity.iloc[-1] - 1),
        "sharpe": _sharpe(r),
        "max_drawdown": float((equity / equity.cummax() - 1).min()),
    }


def pandas_walkforward(close: pd.Series) -> list[tuple[int, int]]:
    """Rolling folds (train 730, test 180, step 180); per fold every grid point on train,
    the best by Sharpe evaluated on test."""
    chosen = []
    n = len(close)
    start = 0
    while start + TRAIN + TEST <= n:
        train = close.iloc[: start + TRAIN]
        scores = {
            (f, s): _sharpe(_ema_cross_returns(train, f, s, 10e-4).iloc[start:])
            for f in GRID["fast"]
            for s in GRID["slow"]
        }
        best = max(scores, key=lambda k: scores[k])
        test = close.iloc[: start + TRAIN + TEST]
        _ema_cross_returns(test, *best, 10e-4).iloc[start + TRAIN :].sum()
        chosen.append(best)
        start += TEST
    return chosen


def arch_cbb(src: np.ndarray, block: int, paths: int, seed: int = 7) -> dict[str, float]:
    """arch's circular block bootstrap, reduced to the same outputs (max drawdown and
    terminal return percentiles)."""
    from arch.bootstrap import CircularBlockBootstrap

    cbb = CircularBlockBootstrap(block, src, seed=seed)
    rows = np.empty((paths, HORIZON))
    reps = -(-HORIZON // src.size)
    for i in range(paths):
        idx = cbb.update_indices()
        rows[i] = src[np.tile(idx, reps)[:HORIZON]]
    eq = np.cumprod(1 + rows, axis=1)
    mdd = (eq / np.maximum.accumulate(eq, axis=1) - 1).min(axis=1)
    term = eq[:, -1] - 1
    return {"mdd_p50": float(np.median(mdd)), "term_p5": float(np.percentile(term, 5))}


def kernel_in_process(src: np.ndarray, block: int, paths: int, repeats: int) -> list[float]:
    """squall's own path kernel in this process (no HTTP, no Ray): the reference for 1M."""
    from serve_app.execution import chunks
    from serve_app.services import simulation
    from serve_app.services.requests.simulation import SimulateRequest
    from serve_app.settings import Settings

    req = SimulateRequest(
        returns=src.tolist(),
        horizon=HORIZON,
        paths=paths,
        seed=7,
        bootstrap={"kind": "circular", "block_length": block},  # type: ignore[arg-type]
    )
    prep = simulation.prepare(None, Settings(), req)  # type: ignore[arg-type]
    chunks.run(prep.job, use_ray=False)  # compile
    return timed(lambda: chunks.run(prep.job, use_ray=False), repeats)


# ------------------------------------------------------------------------------- the cases
def cases(block: int, paths_1m: int) -> dict[str, tuple[str, str, dict[str, Any] | None]]:
    sim = {
        "backtest": {"coin": "BTC", "interval": "1d", "strategy": "buy_and_hold"},
        "horizon": HORIZON,
        "seed": 7,
        "mode": "sync",
        "bootstrap": {"kind": "circular", "block_length": block},
    }
    return {
        "simulate 20k x 365": ("POST", "/risk/simulate", {**sim, "paths": 20_000}),
        "simulate 100k x 365": ("POST", "/risk/simulate", {**sim, "paths": 100_000}),
        f"simulate {paths_1m // 1000}k x 365": (
            "POST",
            "/risk/simulate",
            {**sim, "paths": paths_1m},
        ),
        "walk-forward 12 folds x 6": (
            "POST",
            "/backtest/walkforward",
            {
                "coin": "BTC",
                "interval": "1d",
                "strategy": "ema_cross",
                "grid": GRID,
                "train_bars": TRAIN,
                "test_bars": TEST,
                "fee_bps": 10,
            },
        ),
        "indicators ema:20, 3k bars": (
            "GET",
            "/indicators?coin=BTC&interval=1d&names=ema:20&start=2017-01-01&limit=5000",
            None,
        ),
        "backtest ema_cross, 3k bars": (
            "POST",
            "/backtest/run",
            {"coin": "BTC", "interval": "1d", "strategy": "ema_cross", "fee_bps": 10},
        ),
    }


def request(client: httpx.Client, base: str, method: str, path: str, body: Any) -> Any:
    r = client.request(method, base + path, json=body)
    if r.status_code != 200:
        raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")
    return r.json()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20, help="timed requests per case")
    parser.add_argument("--paths-1m", type=int, default=1_000_000, help="the large simulation")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if not (DATA / BTC_FILE).is_file():
        log(f"needs {DATA / BTC_FILE}")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench_latency_"))
    platform = Platform(tmp)
    platform.squall("import", str(DATA / BTC_FILE), "--coin", "BTC", "--interval", "1d")
    platform.squall("import", str(DATA / ETH_FILE), "--coin", "ETH", "--interval", "1d")
    frame = load_candles(platform.url)
    close = frame["close"].to_numpy()
    src = close[1:] / close[:-1] - 1.0
    from compute.simulation.bootstrap import politis_white

    block = max(1, round(politis_white(src)[1]))
    log(f"{len(frame)} BTC daily bars; circular block length {block}")
    up_s = platform.start()
    log(f"squall up ready in {up_s:.1f} s (fresh kernel cache)")
    rows: list[dict[str, Any]] = []
    results: dict[str, Any] = {}
    first: dict[str, float] = {}
    restart: dict[str, float] = {}
    plan = cases(block, args.paths_1m)
    try:
        with httpx.Client(timeout=600) as client:
            for name, (method, path, body) in plan.items():  # right after the first start
                t0 = time.perf_counter()
                results[name] = request(client, platform.base, method, path, body)
                first[name] = time.perf_counter() - t0
            warm_s = platform.wait_warm()
            log(f"warm-up finished {warm_s:.1f} s later")
            for name, (method, path, body) in plan.items():
                for _ in range(2):
                    request(client, platform.base, method, path, body)
                times = timed(
                    lambda m=method, p=path, b=body: request(client, platform.base, m, p, b),
                    args.requests,
                )
                last = request(client, platform.base, method, path, body)
                rows.append(
                    {
                        "case": name,
                        "p50": pct(times, 50),
                        "p90": pct(times, 90),
                        "execution": last.get("execution") or {},
                    }
                )
                log(
                    f"{name}: first {first[name]:.3f} s, p50 {rows[-1]['p50'] * 1e3:.1f} ms, "
                    f"p90 {rows[-1]['p90'] * 1e3:.1f} ms"
                )
        platform.stop()
        up2_s = platform.start()  # a restart: the kernel cache of the first run is there
        log(f"restart ready in {up2_s:.1f} s")
        with httpx.Client(timeout=600) as client:
            for name, (method, path, body) in plan.items():
                t0 = time.perf_counter()
                request(client, platform.base, method, path, body)
                restart[name] = time.perf_counter() - t0
    finally:
        platform.stop()
    # ---------------------------------------------------------------------- peers, same run
    log("peers ...")
    arch_t = timed(lambda: arch_cbb(src, block, 20_000), 3)
    wf_t = timed(lambda: pandas_walkforward(frame["close"]), 7)
    ind_t = timed(lambda: pandas_indicator(platform.url), 21)
    bt_t = timed(lambda: pandas_backtest(platform.url), 21)
    kern_t = kernel_in_process(src, block, args.paths_1m, 5)
    peer = {
        "simulate 20k x 365": ("arch CircularBlockBootstrap + NumPy stats", arch_t, 10.0, "x"),
        f"simulate {args.paths_1m // 1000}k x 365": ("squall kernel in-process", kern_t, 1.5, "<="),
        "walk-forward 12 folds x 6": ("pandas loop, same folds and grid", wf_t, 2.0, "<="),
        "indicators ema:20, 3k bars": ("pandas read_sql + ewm + to_json", ind_t, 3.0, "<="),
        "backtest ema_cross, 3k bars": ("pandas read_sql + EMA-cross backtest", bt_t, 3.0, "<="),
    }
    print(
        f"\nsquall up ready in {up_s:.1f} s; {args.requests} timed requests per case "
        f"(after 2 warm-up ones); peers in the same run (median)\n"
    )
    print("| request | p50 | p90 | peer | peer median | ratio | target |")
    print("|---|---|---|---|---|---|---|")
    ok = True
    for row in rows:
        name = row["case"]
        line = f"| {name} | {row['p50'] * 1e3:.1f} ms | {row['p90'] * 1e3:.1f} ms |"
        if name in peer:
            what, times, goal, kind = peer[name]
            med = statistics.median(times)
            if kind == "x":  # squall must be goal x faster than the peer
                ratio = med / row["p50"]
                passed = ratio >= goal
                line += f" {what} | {med * 1e3:.1f} ms | {ratio:.1f}x faster | >= {goal:g}x"
            else:  # squall within goal x the peer's time
                ratio = row["p50"] / med
                passed = ratio <= goal
                line += f" {what} | {med * 1e3:.1f} ms | {ratio:.2f}x its time | <= {goal:g}x"
            if name.startswith(("indicators", "backtest")):
                passed = passed and row["p50"] <= 0.020
                line += " and p50 <= 20 ms"
            line += " PASS |" if passed else " FAIL |"
            ok = ok and passed
        else:
            line += " | | | |"
        print(line)
    p50 = {r["case"]: r["p50"] for r in rows}
    print(
        "\nfirst request after the first start (fresh kernel cache, warm-up running): "
        + ", ".join(f"{k} {first[k] * 1e3:.0f} ms ({first[k] / p50[k]:.1f}x)" for k in p50)
    )
    print(
        "first request after a restart (kernel cache kept; target <= ~2x warm): "
        + ", ".join(f"{k} {restart[k] * 1e3:.0f} ms ({restart[k] / p50[k]:.1f}x)" for k in p50)
    )
    print(
        "execution of the last answer per case: "
        + json.dumps(
            {
                r["case"]: {k: r["execution"].get(k) for k in ("where", "warm", "compiles")}
                for r in rows
            }
        )
    )
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
