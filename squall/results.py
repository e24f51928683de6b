"""What the client returns: pandas frames indexed by UTC timestamps, and small result objects
that keep the API's whole answer in ``raw``.

Every time the API sends as unix seconds (``*_unix``) becomes a ``pandas.Timestamp`` in UTC;
the ISO-8601 twin is dropped (the same instant).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd


def to_time(values: Any) -> Any:
    """Unix seconds (a number or a column) as UTC ``pandas`` timestamps."""
    return pd.to_datetime(values, unit="s", utc=True)


def frame(rows: Iterable[Mapping[str, Any]], index: str | None = "ts") -> pd.DataFrame:
    """Rows as a frame: each ``X_unix`` column becomes ``X`` as UTC timestamps (replacing
    the ISO text), indexed by ``index`` when present."""
    df = pd.DataFrame(list(rows))
    for col in [c for c in df.columns if str(c).endswith("_unix")]:
        name = str(col)[: -len("_unix")]
        df[name] = to_time(df[col])
        df = df.drop(columns=col)
    if index is not None and index in df.columns:
        df = df.set_index(index)
    return df


def equity_frame(equity: Mapping[str, Any] | None) -> pd.DataFrame:
    """An equity block (``ts_unix`` and value columns) as a frame indexed by ``ts``."""
    if not equity or not equity.get("ts_unix"):
        return pd.DataFrame(columns=["equity"], index=pd.DatetimeIndex([], tz="UTC", name="ts"))
    cols = {
        k: v
        for k, v in equity.items()
        if isinstance(v, list) and len(v) == len(equity["ts_unix"]) and k not in ("ts", "ts_unix")
    }
    df = pd.DataFrame(cols, index=pd.DatetimeIndex(to_time(equity["ts_unix"]), name="ts"))
    return df.astype(float)


def _times(body: Mapping[str, Any]) -> dict[str, Any]:
    """``X_unix`` fields of a mapping as timestamps under ``X`` (None stays None)."""
    return {
        k[: -len("_unix")]: None if v is None else to_time(v)
        for k, v in body.items()
        if k.endswith("_unix")
    }


def _metrics(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Metrics with their times as timestamps: ``X_ts_unix`` (an HTTP answer) or an integer
    ``X_ts`` (the registry's summary) becomes ``X_ts``; the ISO-8601 twin is dropped."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key.endswith("_ts_unix"):
            out[key[: -len("_unix")]] = None if value is None else to_time(value)
        elif key.endswith("_ts") and not isinstance(value, bool):
            if isinstance(value, int):
                out[key] = to_time(value)
            elif value is None:
                out.setdefault(key, None)
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class Run:
    """A run of the registry (``GET /runs/{id}``): identity, lifecycle, progress, results."""

    run_id: str
    kind: str
    status: str
    progress: dict[str, Any] | None
    metrics: dict[str, Any] | None
    error: str | None
    created_at: pd.Timestamp
    finished_at: pd.Timestamp | None
    request: dict[str, Any] | None
    results: dict[str, Any] | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Run:
        t = _times(body)
        return cls(
            run_id=str(body["run_id"]),
            kind=str(body.get("kind", "")),
            status=str(body["status"]),
            progress=body.get("progress"),
            metrics=body.get("metrics"),
            error=body.get("error"),
            created_at=t.get("created_at"),  # type: ignore[arg-type]
            finished_at=t.get("finished_at"),
            request=body.get("request"),
            results=body.get("results"),
            raw=dict(body),
        )

    @property
    def done(self) -> bool:
        """No longer queued or running."""
        return self.status not in ("queued", "running")

    @property
    def equity(self) -> pd.DataFrame:
        return equity_frame(self.raw.get("equity"))

    @property
    def trades(self) -> pd.DataFrame:
        return frame(self.raw.get("trades") or [], index=None)


@dataclass(frozen=True)
class BacktestResult:
    """One backtest: ``metrics`` (the engine's), ``equity`` (equity, drawdown, position by
    bar time), ``trades`` (one row per trade), ``used`` (data, parameters, provenance)."""

    run_id: str
    metrics: dict[str, Any]
    equity: pd.DataFrame
    trades: pd.DataFrame
    used: dict[str, Any]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> BacktestResult:
        """From ``POST /backtest/run``'s answer, or a backtest's ``GET /runs/{id}``."""
        metrics = _metrics(body.get("metrics") or {})
        used = body.get("used") or (body.get("results") or {}).get("used") or {}
        return cls(
            run_id=str(body["run_id"]),
            metrics=metrics,
            equity=equity_frame(body.get("equity")),
            trades=frame(body.get("trades") or [], index=None),
            used=dict(used),
            raw=dict(body),
        )


@dataclass(frozen=True)
class WalkForwardResult:
    """A walk-forward: out-of-sample ``metrics`` and stitched ``equity``, one row per fold in
    ``folds`` (windows, chosen parameters, IS/OOS objective), and the ``decay`` diagnostics."""

    run_id: str
    metrics: dict[str, Any]
    equity: pd.DataFrame
    folds: pd.DataFrame
    decay: dict[str, Any]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> WalkForwardResult:
        oos = body.get("oos") or {}
        rows = []
        for f in body.get("folds") or []:
            row: dict[str, Any] = {"fold": f.get("index"), "oos_is_ratio": f.get("oos_is_ratio")}
            for part in ("train", "test"):
                span = f.get(part) or {}
                for key in ("start", "end"):
                    unix = span.get(f"{key}_ts_unix", span.get(f"{key}_unix"))
                    row[f"{part}_{key}"] = None if unix is None else to_time(unix)
            row["params"] = f.get("chosen_params")
            objective = (body.get("decay") or {}).get("objective", "sharpe")
            row[f"is_{objective}"] = (f.get("is_metrics") or {}).get(objective)
            row[f"oos_{objective}"] = (f.get("oos_metrics") or {}).get(objective)
            rows.append(row)
        return cls(
            run_id=str(body["run_id"]),
            metrics=dict(oos.get("metrics") or {}),
            equity=equity_frame(oos.get("equity")),
            folds=pd.DataFrame(rows).set_index("fold") if rows else pd.DataFrame(),
            decay=dict(body.get("decay") or {}),
            raw=dict(body),
        )


@dataclass(frozen=True)
class SimulationResult:
    """A stress simulation: the reduced ``result`` (VaR/ES, drawdown percentiles, ruin and
    liquidation probabilities), the equity ``fan`` (percentiles by step), ``used`` and
    ``timings``."""

    run_id: str
    result: dict[str, Any]
    fan: pd.DataFrame
    used: dict[str, Any]
    timings: dict[str, Any]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> SimulationResult:
        result = dict(body.get("result") or {})
        fan = pd.DataFrame(result.get("equity_fan") or [])
        if "step" in fan.columns:
            fan = fan.set_index("step")
        return cls(
            run_id=str(body["run_id"]),
            result=result,
            fan=fan,
            used=dict(body.get("used") or {}),
            timings=dict(body.get("timings") or {}),
            raw=dict(body),
        )

    @property
    def var_99(self) -> float:
        return float(self.result["horizon_return"]["var_99"])

    @property
    def es_99(self) -> float:
        return float(self.result["horizon_return"]["es_99"])


@dataclass(frozen=True)
class RiskReport:
    """``POST /risk/report``: ``var`` has one row per series, level and method (``var`` and
    ``es`` as returns, negative for losses); ``portfolio`` the weighted figures, if asked."""

    var: pd.DataFrame
    series: pd.DataFrame
    portfolio: dict[str, Any] | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> RiskReport:
        rows, moments = [], []
        for s in body.get("series") or []:
            moments.append({k: v for k, v in s.items() if not isinstance(v, dict | list)})
            for lv in s.get("levels") or []:
                for method in ("historical", "normal", "cornish_fisher"):
                    if isinstance(lv.get("var"), dict) and method in lv["var"]:
                        rows.append(
                            {
                                "label": s["label"],
                                "level": lv["level"],
                                "method": method,
                                "var": lv["var"][method],
                                "es": (lv.get("es") or {}).get(method),
                            }
                        )
        series = pd.DataFrame(moments).set_index("label") if moments else pd.DataFrame()
        return cls(pd.DataFrame(rows), series, body.get("portfolio"), dict(body))
