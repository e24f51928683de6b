"""``Client``: squall's HTTP API from Python (a notebook, a script), over httpx.

    from squall.client import Client

    with Client("http://127.0.0.1:8000") as api:
        btc = api.candles("BTC", "1d", start="2024-01-01")        # DataFrame, UTC index
        bt = api.backtest("BTC", "1d", "ema_cross", {"fast": 12, "slow": 26})
        bt.metrics["sharpe"], bt.equity["equity"].iloc[-1]
        sim = api.simulate(backtest={"coin": "BTC", "interval": "1d", "strategy": "ema_cross"},
                           paths=200_000, horizon=365, on_progress=print)

It talks HTTP only (nothing of the server is imported): it works against ``make run`` on a
laptop or a cluster's API. Times may be given as ISO-8601 text, unix seconds, ``datetime`` or
``pandas.Timestamp`` (naive means UTC) and come back as UTC ``pandas.Timestamp``. Every error
answer raises a :mod:`squall.errors` exception with the API's code and message.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx
import pandas as pd

from squall.errors import (
    InvalidRequestError,
    RunFailedError,
    SquallConnectionError,
    WaitTimeoutError,
    error_for,
)
from squall.results import (
    BacktestResult,
    RiskReport,
    Run,
    SimulationResult,
    WalkForwardResult,
    frame,
    to_time,
)

TimeLike = str | int | float | datetime | pd.Timestamp | None
Progress = Callable[[int, int, str], None]
PAGE = 5000  # rows per page of a long read (the server's default cap)
ACTIVE = ("queued", "running")


def _time(value: TimeLike) -> str | int | None:
    """A time for the API: ISO-8601 UTC text or unix seconds."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise TypeError("a time cannot be a bool")
    if isinstance(value, int | float):
        return int(value)
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _unix(value: TimeLike) -> int | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return int(stamp.timestamp())


def _drop_none(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


class Client:
    """A squall API at ``base_url``; ``timeout`` (seconds) bounds each HTTP call, ``token`` is
    sent as ``Authorization: Bearer`` (the API's SQUALL_API_TOKEN, or a gateway's); without
    one, the ``SQUALL_API_TOKEN`` variable of this process is sent when set. Close it, or use
    it as a context manager."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        timeout: float = 120.0,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Accept": "application/json", "User-Agent": "squall-client"}
        token = token if token is not None else os.environ.get("SQUALL_API_TOKEN") or None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, headers=headers, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

    # ------------------------------------------------------------------------- plumbing
    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call; an error status raises its :mod:`squall.errors` exception."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise SquallConnectionError(
                f"cannot reach squall at {self.base_url} ({type(exc).__name__}: {exc}); "
                "is it running (`make run` / `squall up`)?"
            ) from exc
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = None
            raise error_for(response.status_code, body, response.text)
        return response

    def get(self, path: str, **params: Any) -> Any:
        """``GET path?params`` as decoded JSON (None-valued parameters are left out)."""
        return self.request("GET", path, params=_drop_none(params)).json()

    def post(self, path: str, body: Mapping[str, Any]) -> tuple[int, Any]:
        """``POST path`` with a JSON body: (status, decoded JSON)."""
        response = self.request("POST", path, json=_drop_none(body))
        return response.status_code, response.json()

    def _rows(
        self,
        path: str,
        key: str,
        params: dict[str, Any],
        start: TimeLike,
        end: TimeLike,
        limit: int | None,
    ) -> list[dict[str, Any]]:
        """Rows of a windowed read. Neither ``start`` nor ``limit``: one request (the
        server's default count, up to ``end``). Otherwise paged: forward from ``start`` (to
        ``end``, or ``limit`` rows), or backwards for the latest ``limit`` rows up to ``end``."""
        if start is None and limit is None:
            return list(self.get(path, **params, end=_time(end))[key])
        out: list[dict[str, Any]] = []
        page = PAGE
        cursor, stop = _unix(start), _unix(end)
        while limit is None or len(out) < limit:
            want = page if limit is None else min(page, limit - len(out))
            try:
                rows = self.get(path, **params, start=cursor, end=stop, limit=want)[key]
            except InvalidRequestError as exc:  # the server caps pages below the default
                cap = exc.body.get("max_limit")
                if exc.code != "limit_out_of_range" or not cap or int(cap) >= want:
                    raise
                page = int(cap)
                continue
            if start is None:  # the latest rows, going back in time
                out = rows + out
                if len(rows) < want:
                    break
                stop = int(rows[0]["ts_unix"]) - 1
            else:
                out += rows
                if len(rows) < want:
                    break
                cursor = int(rows[-1]["ts_unix"]) + 1
        return out

    # ---------------------------------------------------------------------------- market
    def health(self) -> dict[str, Any]:
        """``GET /health``: database, series freshness, Ray, ingestion jobs."""
        return dict(self.get("/health"))

    def coins(self) -> pd.DataFrame:
        """Every stored series with its coverage: coin, interval, first/last bar, count,
        source (``GET /market/coins``)."""
        body = self.get("/market/coins")
        rows = [
            {"coin": c["coin"], "configured_coin": c["configured"], **s}
            for c in body["coins"]
            for s in c["series"]
        ]
        return frame(rows, index=None)

    def gaps(self, coin: str | None = None, interval: str | None = None) -> pd.DataFrame:
        """One row per run of missing bars (``GET /market/gaps``)."""
        body = self.get("/market/gaps", coin=coin, interval=interval)
        rows = [
            {"coin": r["coin"], "interval": r["interval"], **g}
            for r in body["reports"]
            for g in r["gaps"]
        ]
        return frame(rows, index=None)

    def candles(
        self,
        coin: str,
        interval: str,
        start: TimeLike = None,
        end: TimeLike = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """OHLCV by bar open time (UTC index ``ts``). With ``start``: every bar from it to
        ``end`` (paged over as many requests as needed); without: the latest ``limit`` bars
        (default the server's)."""
        params = {"coin": coin, "interval": interval}
        rows = self._rows("/market/candles", "candles", params, start, end, limit)
        return frame(rows).astype({"open": float, "high": float, "low": float, "close": float})

    def indicators(
        self,
        coin: str,
        interval: str,
        names: str | Sequence[str],
        start: TimeLike = None,
        end: TimeLike = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Indicator columns by bar time (``names`` like ``"ema:20,rsi:14"``); NaN inside a
        warm-up, never zeros."""
        spec = names if isinstance(names, str) else ",".join(names)
        params = {"coin": coin, "interval": interval, "names": spec}
        return frame(self._rows("/indicators", "rows", params, start, end, limit)).astype(float)

    def features(
        self,
        coin: str,
        interval: str,
        start: TimeLike = None,
        end: TimeLike = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Feature-store rows by bar time (never stale: see ``docs/api.md``)."""
        params = {"coin": coin, "interval": interval}
        return frame(self._rows("/features", "rows", params, start, end, limit))

    # -------------------------------------------------------------------------- research
    def backtest(
        self,
        coin: str,
        interval: str,
        strategy: str,
        params: Mapping[str, Any] | None = None,
        *,
        start: TimeLike = None,
        end: TimeLike = None,
        wait: bool = True,
        on_progress: Progress | None = None,
        **options: Any,
    ) -> BacktestResult:
        """One backtest (``POST /backtest/run``); ``options`` are the other body fields
        (``fee_bps``, ``slippage_bps``, ``sizing`` ...). The full equity curve and trade list
        come back. ``wait=False`` queues it (mode async) and waits for it here, with
        ``on_progress(done, total, unit)``."""
        body = {
            "coin": coin,
            "interval": interval,
            "strategy": strategy,
            "params": dict(params or {}),
            "start": _time(start),
            "end": _time(end),
            "equity_points": 100_000,
            "max_trades": 100_000,
            **options,
        }
        if wait:
            return BacktestResult.from_body(self.post("/backtest/run", body)[1])
        _, queued = self.post("/backtest/run", {**body, "mode": "async"})
        self.wait(queued["run_id"], on_progress=on_progress)
        return BacktestResult.from_body(
            self.get(f"/runs/{queued['run_id']}", equity_points=100_000, max_trades=100_000)
        )

    def walkforward(
        self,
        coin: str,
        interval: str,
        strategy: str,
        grid: Mapping[str, Sequence[float]],
        *,
        train_bars: int,
        test_bars: int,
        start: TimeLike = None,
        end: TimeLike = None,
        **options: Any,
    ) -> WalkForwardResult:
        """Walk-forward validation (``POST /backtest/walkforward``): choose on each train
        window, evaluate out of sample; ``options``: objective, step_bars, purge_bars ..."""
        body = {
            "coin": coin,
            "interval": interval,
            "strategy": strategy,
            "grid": {k: list(v) for k, v in grid.items()},
            "train_bars": train_bars,
            "test_bars": test_bars,
            "start": _time(start),
            "end": _time(end),
            "equity_points": 100_000,
            **options,
        }
        return WalkForwardResult.from_body(self.post("/backtest/walkforward", body)[1])

    def simulate(
        self,
        *,
        backtest: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        returns: Sequence[float] | None = None,
        paths: int = 10_000,
        horizon: int = 365,
        seed: int = 0,
        on_progress: Progress | None = None,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
        **options: Any,
    ) -> SimulationResult:
        """A Monte Carlo stress simulation (``POST /risk/simulate``) of a backtest spec, a
        recorded run or given returns. Large ones are queued by the server: the client waits
        (``on_progress(done, total, "paths")``) and returns the result."""
        body = {
            "backtest": dict(backtest) if backtest else None,
            "run_id": run_id,
            "returns": None if returns is None else [float(r) for r in returns],
            "paths": paths,
            "horizon": horizon,
            "seed": seed,
            **options,
        }
        status, answer = self.post("/risk/simulate", body)
        if status == 202 or answer.get("status") in ACTIVE:
            self.wait(answer["run_id"], on_progress=on_progress, poll_s=poll_s, timeout_s=timeout_s)
            answer = self.get(f"/risk/simulations/{answer['run_id']}")
        return SimulationResult.from_body(answer)

    # ------------------------------------------------------------------------------ risk
    def risk_report(
        self,
        coins: Sequence[str] | None = None,
        *,
        run_id: str | None = None,
        interval: str = "1d",
        window: int = 365,
        levels: Sequence[float] = (0.95, 0.99),
        weights: Mapping[str, float] | None = None,
        **options: Any,
    ) -> RiskReport:
        """VaR/ES by three methods, moments, drawdown, vol targeting (``POST /risk/report``)."""
        body = {
            "coins": None if coins is None else list(coins),
            "run_id": run_id,
            "interval": interval if run_id is None else None,
            "window": window,
            "levels": list(levels),
            "weights": None if weights is None else dict(weights),
            **options,
        }
        return RiskReport.from_body(self.post("/risk/report", body)[1])

    def correlation(
        self, coins: Sequence[str], interval: str = "1d", window: int = 365, **options: Any
    ) -> pd.DataFrame:
        """The correlation matrix of ``coins``' returns on common timestamps, labelled."""
        body = self.get(
            "/risk/correlation",
            coins=",".join(coins),
            interval=interval,
            window=window,
            **options,
        )
        labels = body["labels"]
        return pd.DataFrame(body["matrix"], index=labels, columns=labels)

    # -------------------------------------------------------------------------- registry
    def runs(
        self,
        kind: str | None = None,
        status: str | None = None,
        coin: str | None = None,
        strategy: str | None = None,
        interval: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> pd.DataFrame:
        """A page of the run registry, newest first, one row per run (``GET /runs``)."""
        body = self.get(
            "/runs",
            kind=kind,
            status=status,
            coin=coin,
            strategy=strategy,
            interval=interval,
            limit=limit,
            offset=offset,
        )
        df = frame(body["runs"], index="run_id")
        return df

    def run(self, run_id: str) -> Run:
        """One run with its request, results and (for backtests) full equity and trades."""
        return Run.from_body(self.get(f"/runs/{run_id}", equity_points=100_000))

    def wait(
        self,
        run_id: str,
        *,
        on_progress: Progress | None = None,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
    ) -> Run:
        """Poll ``GET /runs/{id}`` until the run finished; RunFailedError unless it succeeded."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            body = self.get(f"/runs/{run_id}", equity_points=2, max_trades=0)
            p = body.get("progress") or {}
            if on_progress is not None and p:
                on_progress(int(p.get("done", 0)), int(p.get("total", 0)), str(p.get("unit", "")))
            if body["status"] not in ACTIVE:
                if body["status"] != "succeeded":
                    raise RunFailedError(body)
                return Run.from_body(body)
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeoutError(f"run {run_id} still {body['status']} after {timeout_s} s")
            time.sleep(poll_s)

    def cancel(self, run_id: str) -> Run:
        """Ask a queued or running run to stop (ConflictError if it already finished)."""
        return Run.from_body(self.request("DELETE", f"/runs/{run_id}").json())

    def compare(self, run_ids: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Runs side by side: (metrics by metric x run, equity by time x run)."""
        body = self.get("/backtest/compare", ids=",".join(run_ids))
        metrics = pd.DataFrame(
            {m["metric"]: m["values"] for m in body["metrics"]}, index=list(run_ids)
        ).T
        eq = body["equity"]
        equity = pd.DataFrame(eq["series"], index=pd.DatetimeIndex(to_time(eq["ts_unix"])))
        return metrics, equity.astype(float)

    # --------------------------------------------------------------------------- reports
    def report_html(self, run_id: str) -> str:
        """The run's self-contained HTML report (``GET /runs/{id}/report``)."""
        return self.request("GET", f"/runs/{run_id}/report").text

    def chart(self, run_id: str, name: str, format: str = "png", **params: Any) -> bytes:
        """One chart of the run's report as PNG or SVG bytes (``width``, ``scale``)."""
        return self.request(
            "GET", f"/runs/{run_id}/charts/{name}.{format}", params=_drop_none(params)
        ).content

    def risk_report_html(self, coins: Sequence[str], **body: Any) -> str:
        """The risk report of ``coins`` as an HTML page (``POST /risk/report/html``)."""
        return self.request(
            "POST", "/risk/report/html", json=_drop_none({"coins": list(coins), **body})
        ).text
