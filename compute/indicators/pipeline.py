"""``compute_indicators``: a whole spec in one jitted call per chunk of series, and its twin.

``compute_indicators(spec, open, high, low, close, volume, ts)`` parses the spec (see
:mod:`compute.indicators.registry`), validates the arrays the spec needs, and evaluates every
request in
**one** ``jax.jit`` compiled per (spec, padded length, chunk size). Inside it a small memo
shares components between requests - ``ema:12`` and ``macd:12:26:9`` use one EMA(12) scan,
``bb:20`` and ``zscore:20`` one set of window moments, a gated signal reuses ``vreg`` - so a
long spec costs little more than its distinct components.

``(K, T)`` inputs are processed in chunks of series (``series_per_call``): on a 2-core CPU,
arrays of a few tens of MB per chunk run faster than one huge batch (fresh large buffers cost
page faults) and keep memory bounded. ``compute_indicators_reference`` gives the same dict from
the NumPy references, series by series.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from compute.core import inputs
from compute.core.batching import Recurrence, fusion_groups, over_series, run_fused
from compute.core.errors import InputDataError, SpecError
from compute.core.jaxconf import jax, jnp, require_x64
from compute.core.labels import GATE_LOOKBACK, GATE_N, GATE_Z
from compute.core.rolling import (
    EMA_FROM_SEED,
    SESSION_RATIO,
    ew_variance_args,
    seeded_ema_args,
    session_ratio_args,
    window_moments,
    window_sums,
)
from compute.indicators import kernels as ind
from compute.indicators import reference as ref
from compute.indicators import regimes as reg
from compute.indicators import signals as sig
from compute.indicators.registry import Request, parse_indicator_spec, required_inputs

Array = jax.Array
Spec = str | Iterable[Request]

CHUNK_ELEMENTS = 1 << 21  # bars x series per jitted call (16 MB per float64 array)

_moments = over_series(window_moments)
_sums = over_series(window_sums)
_ema_args = over_series(seeded_ema_args)
_session_args = over_series(session_ratio_args)
_ew_variance_args = over_series(ew_variance_args)
_gains_losses = over_series(ind.gains_losses)
_true_range = over_series(ind.true_range_1d)
_typical_price = over_series(ind.typical_price_1d)


def _fused_over_series(
    jobs: list[tuple[Recurrence, tuple[Array, ...]]],
) -> list[tuple[Array, ...]]:
    """:func:`compute.core.batching.run_fused` over ``(K, ...)`` arguments (series on axis 0)."""
    sizes = [len(args) for _, args in jobs]
    flat = [a for _, args in jobs for a in args]

    def one(*args: Array) -> list[tuple[Array, ...]]:
        calls, i = [], 0
        for (rec, _), size in zip(jobs, sizes, strict=True):
            calls.append((rec, tuple(args[i : i + size])))
            i += size
        return run_fused(calls)

    return jax.vmap(one)(*flat)


def _recursions(r: Request) -> list[tuple[tuple[Any, ...], bool]]:
    """The recursions a request reads, as (memo key, reads another recursion's output)."""
    p, name = r.params, r.spec.name
    n = int(p.get("n", 0))
    keys: list[tuple[tuple[Any, ...], bool]] = []
    if p.get("vol_gate"):
        keys += [(("ew_mean", GATE_N, GATE_LOOKBACK), False)]
        keys += [(("ew_var", GATE_N, GATE_LOOKBACK), True)]
    if name == "ema":
        keys.append((("ema", n), False))
    elif name in ("rsi", "rsi_mr"):
        keys += [(("gain", n), False), (("loss", n), False)]
    elif name in ("macd", "ema_cross"):
        f, s = int(p["fast"]), int(p["slow"])
        keys += [(("ema", f), False), (("ema", s), False)]
        if name == "macd":
            keys.append((("macd_signal", f, s, int(p["signal"])), True))
    elif name == "atr":
        keys.append((("atr", n), False))
    elif name == "trend":
        keys += [(("ema", n), False), (("atr", int(p["atr_n"])), False)]
    elif name == "svwap":
        keys.append((("svwap",), False))
    elif name == "vreg":
        lookback = int(p["lookback"])
        keys += [(("ew_mean", n, lookback), False), (("ew_var", n, lookback), True)]
    return keys


_log_returns = over_series(ind.log_returns_1d)
_simple_returns = over_series(ind.simple_returns_1d)


class _Graph:
    """Memoised components over one chunk of ``(k, T)`` arrays (shared between requests)."""

    def __init__(self, arrays: Mapping[str, Array]) -> None:
        self.x = arrays
        self.memo: dict[tuple[Any, ...], Any] = {}

    def _get(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        if key not in self.memo:
            self.memo[key] = make()
        return self.memo[key]

    def ema(self, n: int) -> Array:
        return self._recursion(("ema", n))

    def rsi(self, n: int) -> Array:
        gain, loss = self._recursion(("gain", n)), self._recursion(("loss", n))
        return self._get(("rsi", n), lambda: ind.rsi_from(gain, loss))

    def atr(self, n: int) -> Array:
        return self._recursion(("atr", n))

    def macd_signal(self, fast: int, slow: int, signal: int) -> Array:
        return self._recursion(("macd_signal", fast, slow, signal))

    def svwap(self) -> Array:
        return self._recursion(("svwap",))

    def moments(self, n: int) -> tuple[Array, Array, Array]:
        return self._get(("moments", n), lambda: _moments(self.x["close"], w=n))

    def logret(self) -> Array:
        return self._get(("logret",), lambda: _log_returns(self.x["close"]))

    def rvol(self, n: int, ppy: float) -> Array:
        m2 = self._get(("logret_m2", n), lambda: _moments(self.logret(), w=n)[1])
        return self._get(("rvol", n, ppy), lambda: reg.realized_vol_from(m2, ppy, n))

    def ew_moments(self, n: int, lookback: int) -> tuple[Array, Array]:
        """EW mean and variance of realized vol(n): the baseline of the vol regime."""
        mean = self._recursion(("ew_mean", n, lookback))
        return mean, self._recursion(("ew_var", n, lookback))

    def vreg(self, n: int, lookback: int, z: float) -> Array:
        def make() -> Array:
            mean, var = self.ew_moments(n, lookback)
            return reg.vol_regime_label(self.rvol(n, 1.0), mean, var, z)

        return self._get(("vreg", n, lookback, z), make)

    def prefetch(self, requests: Iterable[Request]) -> None:
        """Compute every recursion ``requests`` need in shared loops, into the memo.

        A recursion costs one loop over time; XLA:CPU runs a loop carrying a few recursions
        of a few series at about the cost of one (:func:`compute.core.batching.run_fused`), so
        the EMAs, Wilder smoothings, session sums and EW means are grouped into as few loops
        as stay compiled as one function, then the recursions that read their results (the
        MACD signal, the EW variance). The methods then find them in the memo; a recursion
        no request announced runs alone when asked for, with the same bits.
        """
        first: dict[tuple[Any, ...], None] = {}
        second: dict[tuple[Any, ...], None] = {}
        for r in requests:
            for key, later in _recursions(r):
                (second if later else first)[key] = None
        self._run_fused(list(first))
        self._run_fused(list(second))

    def _recursion(self, key: tuple[Any, ...]) -> Array:
        if key not in self.memo:
            self._run_fused([key])
        return self.memo[key]

    def _job(self, key: tuple[Any, ...]) -> tuple[Recurrence, tuple[Array, ...]] | None:
        """The recursion behind a memo key and its batched arguments; None when its value
        went straight into the memo (an EW variance too short for its seed: all NaN)."""
        x, kind = self.x, key[0]
        if kind == "ema":
            return EMA_FROM_SEED, _ema_args(x["close"], *ind.ema_smoothing(key[1]))
        if kind in ("gain", "loss"):
            up, down = _gains_losses(x["close"])
            rows = up if kind == "gain" else down
            return EMA_FROM_SEED, _ema_args(rows, *ind.wilder_smoothing(key[1]))
        if kind == "atr":
            tr = _true_range(x["high"], x["low"], x["close"])
            return EMA_FROM_SEED, _ema_args(tr, *ind.wilder_smoothing(key[1]))
        if kind == "svwap":
            tp = _typical_price(x["high"], x["low"], x["close"])
            return SESSION_RATIO, _session_args(tp * x["volume"], x["volume"], x["starts"])
        if kind == "ew_mean":  # seeded from the first realized vol, at bar n
            n, lookback = key[1], key[2]
            return EMA_FROM_SEED, _ema_args(self.rvol(n, 1.0), *ind.ema_smoothing(lookback, n))
        if kind == "ew_var":
            n, lookback = key[1], key[2]
            rv, mean = self.rvol(n, 1.0), self._recursion(("ew_mean", n, lookback))
            args = _ew_variance_args(rv, mean, n=lookback, start=n)
            if args is None:
                self.memo[key] = jnp.full(rv.shape, jnp.nan)
                return None
            return EMA_FROM_SEED, args
        if kind == "macd_signal":
            f, sl, k = key[1:]
            line = self.ema(f) - self.ema(sl)
            return EMA_FROM_SEED, _ema_args(line, *ind.ema_smoothing(k, max(f, sl) - 1))
        raise NotImplementedError(key)  # pragma: no cover - _recursions and this table agree

    def _run_fused(self, keys: list[tuple[Any, ...]]) -> None:
        jobs = [(key, job) for key in keys if key not in self.memo if (job := self._job(key))]
        series = self.x["close"].shape[0]
        for group in fusion_groups([rec for _, (rec, _) in jobs], series):
            chosen = [jobs[i] for i in group]
            outputs = _fused_over_series([job for _, job in chosen])
            for (key, _), out in zip(chosen, outputs, strict=True):
                self.memo[key] = out[0]

    def gate(self, position: Array, vol_gate: float) -> Array:
        if not vol_gate:
            return position
        return sig.gate_from(position, self.vreg(GATE_N, GATE_LOOKBACK, GATE_Z))


def _evaluate_one(g: _Graph, r: Request) -> dict[str, Array]:
    p, x = r.params, g.x
    name = r.spec.name
    n = int(p.get("n", 0))
    if name == "sma":
        return {"sma": g.moments(n)[0]}
    if name == "ema":
        return {"ema": g.ema(n)}
    if name == "rsi":
        return {"rsi": g.rsi(n)}
    if name == "macd":
        f, s, k = int(p["fast"]), int(p["slow"]), int(p["signal"])
        line = g.ema(f) - g.ema(s)
        signal = g.macd_signal(f, s, k)
        return {"macd": line, "macd_signal": signal, "macd_hist": line - signal}
    if name == "atr":
        return {"atr": g.atr(n)}
    if name == "bb":
        out = ind.bollinger_from(*g.moments(n), p["k"], n)
        return dict(
            zip(("bb_mid", "bb_upper", "bb_lower", "bb_pctb", "bb_width"), out, strict=True)
        )
    if name == "zscore":
        return {"zscore": ind.zscore_from(g.moments(n)[1], g.moments(n)[2], n)}
    if name == "vwap":
        pv = _sums(ind.typical_price_1d(x["high"], x["low"], x["close"]) * x["volume"], w=n)
        return {"vwap": ind.ratio_or_nan(pv, _sums(x["volume"], w=n))}
    if name == "svwap":
        return {"svwap": g.svwap()}
    if name == "ret":
        return {"ret": _simple_returns(x["close"])}
    if name == "logret":
        return {"logret": g.logret()}
    if name == "rvol":
        return {"rvol": g.rvol(n, p["ppy"])}
    if name == "vov":
        m = int(p["m"])
        return {"vov": jnp.sqrt(_moments(g.rvol(n, p["ppy"]), w=m)[1] / (m - 1))}
    if name == "vreg":
        return {"vreg": g.vreg(n, int(p["lookback"]), p["z"])}
    if name == "vreg_fixed":
        rv = g.rvol(n, p["ppy"])
        return {"vreg_fixed": reg.vol_label(rv, p["low"], p["high"], ~jnp.isnan(rv))}
    if name == "trend":
        score, label = reg.trend_from(
            g.ema(n), g.atr(int(p["atr_n"])), p["threshold"], int(p["slope"])
        )
        return {"trend_score": score, "trend": label}
    long_only = bool(p.get("long_only", 0))
    if name == "ema_cross":
        pos = sig.ema_cross_from(g.ema(int(p["fast"])), g.ema(int(p["slow"])), long_only)
    elif name == "rsi_mr":
        pos = sig.rsi_reversion_from(g.rsi(n), p["lower"], p["upper"], long_only)
    elif name == "bb_break":
        _, m2, dev = g.moments(n)
        pos = sig.bollinger_breakout_from(m2, dev, p["k"], n, long_only)
    else:  # pragma: no cover - the registry and this table are kept in step by a test
        raise NotImplementedError(name)
    return {name: g.gate(pos, p["vol_gate"])}


def _valid(arrays: Mapping[str, Array]) -> Array:
    """True when the inputs honour the contract of :mod:`compute.core.inputs` (finite, prices > 0,
    volume >= 0, low <= close <= high). Checked here, where the data are read anyway, as one
    elementwise condition and one reduction (NaN fails every comparison, so ``0 < x < inf``
    is "finite and positive"); the caller words the error with NumPy when it is False."""
    inf = jnp.inf
    ok: Array | None = None

    def both(a: Array | None, b: Array) -> Array:
        return b if a is None else a & b

    for name, x in arrays.items():
        if name in ("high", "low", "close"):
            ok = both(ok, (x > 0.0) & (x < inf))
        elif name == "volume":
            ok = both(ok, (x >= 0.0) & (x < inf))
    if "high" in arrays and "low" in arrays:
        h, lo = arrays["high"], arrays["low"]
        ok = both(ok, lo <= h)
        if "close" in arrays:
            ok = both(ok, (arrays["close"] <= h) & (arrays["close"] >= lo))
    return jnp.asarray(True) if ok is None else jnp.all(ok)


def _evaluate(
    requests: tuple[Request, ...], arrays: dict[str, Array]
) -> tuple[dict[str, Array], Array]:
    if "starts" in arrays:  # one (T,) flag row shared by every series
        arrays = {**arrays, "starts": jnp.broadcast_to(arrays["starts"], arrays["close"].shape)}
    g = _Graph(arrays)
    g.prefetch(requests)
    out: dict[str, Array] = {}
    for r in requests:
        for output, value in _evaluate_one(g, r).items():
            out[r.column(output)] = value
    return out, _valid(arrays)


@functools.lru_cache(maxsize=64)
def _compiled(
    requests: tuple[Request, ...],
) -> Callable[[Mapping[str, Any]], tuple[dict[str, Array], Array]]:
    return jax.jit(functools.partial(_evaluate, requests))


def _requests(spec: Spec) -> tuple[Request, ...]:
    return parse_indicator_spec(spec) if isinstance(spec, str) else tuple(spec)


def _collect(
    requests: tuple[Request, ...], given: Mapping[str, Any], check: bool = True
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The arrays ``requests`` read, converted (and validated unless ``check`` is False: the
    jitted call then checks the values); ts becomes unix seconds."""
    needed = required_inputs(requests)
    missing = [k for k in needed if given.get(k) is None]
    if missing:
        items = ",".join(r.text() for r in requests)
        raise InputDataError(f"{', '.join(missing)} required by {items!r}")
    arrays = inputs.ohlc(check, **{k: given[k] for k in needed if k != "ts"})
    named = dict(zip([k for k in needed if k != "ts"], arrays, strict=True))
    ts = None
    if "ts" in needed:
        length = arrays[0].shape[-1] if arrays else np.asarray(given["ts"]).shape[-1]
        ts = inputs.unix_seconds(given["ts"], length)
    return named, ts


def compute_indicators(
    spec: Spec,
    open: inputs.ArrayLike | None = None,
    high: inputs.ArrayLike | None = None,
    low: inputs.ArrayLike | None = None,
    close: inputs.ArrayLike | None = None,
    volume: inputs.ArrayLike | None = None,
    ts: inputs.ArrayLike | None = None,
    *,
    series_per_call: int | None = None,
    workers: int = 1,
) -> dict[str, np.ndarray]:
    """Evaluate ``spec`` with the JAX kernels: column name -> ``(T,)`` or ``(K, T)`` array.

    Only the arrays the spec reads are required (and validated); ``open`` is accepted for a
    uniform call but no indicator reads it. ``ts`` (unix seconds or datetime64) is shared by
    all series. Floats are float64 with NaN warm-up; labels and signals are int8.

    ``series_per_call`` sets the chunk of series per jitted call (default: ~2M bar-series,
    i.e. 2 coins of 1M bars); ``workers > 1`` runs chunks on that many threads (XLA releases
    the GIL, so chunks run in parallel on separate cores). Results do not depend on either.
    """
    require_x64()
    requests = _requests(spec)
    given = {"open": open, "high": high, "low": low, "close": close, "volume": volume, "ts": ts}
    named, secs = _collect(requests, given, check=False)
    for name, value in (("series_per_call", series_per_call), ("workers", workers)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise SpecError(f"{name} must be a positive integer, got {value!r}")
    one_d = next(iter(named.values())).ndim == 1
    rows = {k: np.atleast_2d(v) for k, v in named.items()}
    count, length = next(iter(rows.values())).shape
    padded_len = inputs.bucket(length)
    chunk = series_per_call or max(1, min(count, CHUNK_ELEMENTS // padded_len))
    fn = _compiled(requests)
    starts = None if secs is None else inputs.pad_time(inputs.day_starts(secs), padded_len)

    def run_chunk(lo: int) -> dict[str, np.ndarray]:
        hi = min(lo + chunk, count)
        # the last chunk is filled up by repeating its last series: one shape, one compilation
        take = (
            slice(lo, hi) if hi - lo == chunk else np.r_[lo:hi, np.full(chunk - (hi - lo), hi - 1)]
        )
        batch = {k: inputs.pad_time(v[take], padded_len) for k, v in rows.items()}
        if starts is not None:
            batch["starts"] = starts
        outputs, ok = fn(batch)
        if not bool(ok):  # word the error: the NumPy checks name the array and the position
            inputs.ohlc(True, **named)
            raise InputDataError(
                "inputs break the contract of compute.core.inputs"
            )  # pragma: no cover
        return {k: np.asarray(v)[: hi - lo, :length] for k, v in outputs.items()}

    starts_at = list(range(0, count, chunk))
    if len(starts_at) == 1:
        results = run_chunk(0)  # views of the kernel's buffers: no copy
    else:
        results = {
            r.column(o.name): np.empty((count, length), dtype=np.dtype(o.dtype))
            for r in requests
            for o in r.spec.outputs
        }

        def store(lo: int) -> None:
            for column, value in run_chunk(lo).items():
                results[column][lo : lo + value.shape[0]] = value

        if workers > 1:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(store, starts_at))
        else:
            for lo in starts_at:
                store(lo)
    return {k: v[0] for k, v in results.items()} if one_d else results


# --- the NumPy-reference twin -------------------------------------------------------------


def _given(ts: np.ndarray | None) -> np.ndarray:
    if ts is None:  # pragma: no cover - _collect requires ts for every item that reads it
        raise InputDataError("ts required")
    return ts


def _reference_one(
    r: Request, x: Mapping[str, np.ndarray], ts: np.ndarray | None
) -> dict[str, np.ndarray]:
    p = r.params
    name = r.spec.name
    c = x["close"]  # every item reads the close
    n = int(p.get("n", 0))
    flags = (bool(p.get("long_only", 0)), bool(p.get("vol_gate", 0)))
    table: dict[str, Callable[[], Any]] = {
        "sma": lambda: ref.sma(c, n),
        "ema": lambda: ref.ema(c, n),
        "rsi": lambda: ref.rsi(c, n),
        "macd": lambda: ref.macd(c, int(p["fast"]), int(p["slow"]), int(p["signal"])),
        "atr": lambda: ref.atr(x["high"], x["low"], c, n),
        "bb": lambda: ref.bollinger(c, n, p["k"]),
        "zscore": lambda: ref.zscore(c, n),
        "vwap": lambda: ref.vwap_rolling(x["high"], x["low"], c, x["volume"], n),
        "svwap": lambda: ref.vwap_session(x["high"], x["low"], c, x["volume"], _given(ts)),
        "ret": lambda: ref.simple_returns(c),
        "logret": lambda: ref.log_returns(c),
        "rvol": lambda: ref.realized_vol(c, n, p["ppy"]),
        "vov": lambda: ref.vol_of_vol(c, n, int(p["m"]), p["ppy"]),
        "vreg": lambda: ref.vol_regime(c, n, int(p["lookback"]), p["z"]),
        "vreg_fixed": lambda: ref.vol_regime_fixed(c, n, p["low"], p["high"], p["ppy"]),
        "trend": lambda: (
            ref.trend_score(x["high"], x["low"], c, n, int(p["atr_n"]), int(p["slope"])),
            ref.trend_regime(
                x["high"], x["low"], c, n, int(p["atr_n"]), int(p["slope"]), p["threshold"]
            ),
        ),
        "ema_cross": lambda: ref.ema_cross(c, int(p["fast"]), int(p["slow"]), *flags),
        "rsi_mr": lambda: ref.rsi_reversion(c, n, p["lower"], p["upper"], *flags),
        "bb_break": lambda: ref.bollinger_breakout(c, n, p["k"], *flags),
    }
    values = table[name]()
    values = values if isinstance(values, tuple) else (values,)
    return dict(zip((o.name for o in r.spec.outputs), values, strict=True))


def compute_indicators_reference(
    spec: Spec,
    open: inputs.ArrayLike | None = None,
    high: inputs.ArrayLike | None = None,
    low: inputs.ArrayLike | None = None,
    close: inputs.ArrayLike | None = None,
    volume: inputs.ArrayLike | None = None,
    ts: inputs.ArrayLike | None = None,
) -> dict[str, np.ndarray]:
    """:func:`compute_indicators` computed by :mod:`compute.indicators.reference`, one series at a
    time."""
    requests = _requests(spec)
    named, ts_secs = _collect(
        requests,
        {"open": open, "high": high, "low": low, "close": close, "volume": volume, "ts": ts},
    )
    one_d = next(iter(named.values())).ndim == 1
    rows = {k: np.atleast_2d(v) for k, v in named.items()}
    count = next(iter(rows.values())).shape[0]
    per_row: list[dict[str, np.ndarray]] = []
    for i in range(count):
        x = {k: v[i] for k, v in rows.items()}
        out: dict[str, np.ndarray] = {}
        for r in requests:
            for output, value in _reference_one(r, x, ts_secs).items():
                out[r.column(output)] = value
        per_row.append(out)
    if one_d:
        return per_row[0]
    return {k: np.stack([row[k] for row in per_row]) for k in per_row[0]}
