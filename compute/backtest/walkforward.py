"""Walk-forward validation as pure functions: splits, per-fold selection, stitching, decay.

The Ray fan-out (one task per fold) lives in the service; everything here is a pure function of
arrays, so a fold computed on any worker gives the same numbers.

* :func:`make_folds` - rolling (fixed-length train window sliding by ``step``) or anchored
  (train always starts at bar 0 and grows by ``step``) splits; ``purge`` bars are dropped
  between train and test, so ``train_end + purge == test_start`` and the two never overlap.
* :func:`evaluate_fold` - backtest every grid point on the train window, choose the best by
  the objective (``sharpe``, ``calmar``, ``total_return``, ``sortino``; undefined ranks last,
  ties go to the earlier grid point), evaluate it on the test window. Signals are computed on
  all bars up to the window's end (they are causal, so earlier history only serves as
  warm-up); each window is backtested on its own, starting flat with fresh capital.
* :func:`evaluate_folds` - the same for many folds at once: every (fold, grid point) train
  window and every test window go through one batched accounting scan
  (:func:`compute.backtest.engine.simulate_many`), the objective comes from the equity alone,
  and only the chosen runs are turned into full results (metrics, trades, regime stats).
  Bit for bit the numbers of :func:`evaluate_fold` (tested), several times faster.
* :func:`stitch` - the out-of-sample returns of the folds chained into one equity curve (bars
  already covered by an earlier fold are skipped when test windows overlap) and its metrics.
* :func:`decay_report` - OOS/IS ratio per fold, least-squares slope of the OOS objective
  across folds, and ``fading`` = median OOS/IS ratio < 0.5, **or** (at least 3 folds and) a
  negative slope whose t-statistic is <= -2. Per fold, each regime's OOS bars and trades are
  checked against ``MIN_REGIME_BARS`` / ``MIN_REGIME_TRADES``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from compute.backtest.engine import (
    MIN_REGIME_BARS,
    MIN_REGIME_TRADES,
    BacktestConfig,
    Prepared,
    finish,
    prepare,
    run_backtest,
    simulate_many,
)
from compute.backtest.metrics import objective_value, return_metrics, returns_from_equity
from compute.backtest.plugins import StrategyPlugin
from compute.backtest.strategies import HELD_FROM_START, positions, validate_strategy
from compute.core.errors import InputDataError, SpecError

OBJECTIVES = ("sharpe", "calmar", "total_return", "sortino")
MAX_FOLDS = 200
FADING_RATIO = 0.5
FADING_T = -2.0


@dataclass(frozen=True)
class Fold:
    """Bar index ranges of one fold, half-open: ``[train_start, train_end)`` and
    ``[test_start, test_end)`` with ``test_start = train_end + purge``."""

    index: int
    train_start: int
    train_end: int
    test_start: int
    test_end: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def make_folds(
    n_bars: int, train: int, test: int, step: int, purge: int = 0, anchored: bool = False
) -> list[Fold]:
    """Every fold that fits in ``n_bars`` (see the module docstring).

    Raises :class:`~compute.core.errors.SpecError` for non-positive lengths and
    :class:`~compute.core.errors.InputDataError` when not even one fold fits (saying how many bars
    one fold needs) or when more than ``MAX_FOLDS`` would result.
    """
    for name, value, low in (("train", train, 2), ("test", test, 2), ("step", step, 1),
                             ("purge", purge, 0), ("n_bars", n_bars, 0)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise SpecError(f"{name} must be an integer >= {low}, got {value!r}")
    need = train + purge + test
    if need > n_bars:
        raise InputDataError(
            f"one fold needs train + purge + test = {train} + {purge} + {test} = {need} bars, "
            f"the data has {n_bars}; shorten the windows or load more candles"
        )
    count = (n_bars - need) // step + 1
    if count > MAX_FOLDS:
        raise InputDataError(
            f"{count} folds exceed the cap of {MAX_FOLDS}; raise step to at least "
            f"{math.ceil((n_bars - need) / (MAX_FOLDS - 1))}"
        )
    folds = []
    for k in range(count):
        start = 0 if anchored else k * step
        train_end = train + k * step
        folds.append(Fold(k, start, train_end, train_end + purge, train_end + purge + test))
    return folds


def _window(candles: Mapping[str, np.ndarray], lo: int, hi: int) -> dict[str, np.ndarray]:
    return {k: np.asarray(candles[k])[lo:hi] for k in ("ts", "open", "high", "low", "close")}


def _finite(value: Any) -> float:
    return float(value) if value is not None and math.isfinite(float(value)) else -math.inf


def _score(metrics: Mapping[str, Any], objective: str) -> float:
    return _finite(metrics.get(objective))


Strategy = str | StrategyPlugin  # a built-in's name, or any plugin (a compiled spec included)


def _positions(strategy: Strategy, params: Mapping[str, Any], c: Mapping[str, np.ndarray]) -> Any:
    if isinstance(strategy, str):
        return positions(strategy, params, c["open"], c["high"], c["low"], c["close"])
    return strategy.positions(c, params)


def _validate(strategy: Strategy, params: Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(strategy, str):
        return validate_strategy(strategy, params)
    return strategy.validate(params)


def _held_from_start(strategy: Strategy) -> bool:
    if isinstance(strategy, str):
        return strategy in HELD_FROM_START
    return bool(strategy.held_from_start)


def _run(
    candles: Mapping[str, np.ndarray],
    lo: int,
    hi: int,
    strategy: Strategy,
    params: Mapping[str, Any],
    config: BacktestConfig,
    regimes: Mapping[str, np.ndarray] | None,
    funding: np.ndarray | None,
) -> Any:
    c = _window(candles, 0, hi)
    if "volume" in candles and not isinstance(strategy, str):
        c["volume"] = np.asarray(candles["volume"])[:hi]
    pos = np.asarray(_positions(strategy, params, c))[lo:hi]
    w = _window(candles, lo, hi)
    return run_backtest(
        w["ts"], w["open"], w["high"], w["low"], w["close"], pos, config,
        funding_rate=None if funding is None else funding[lo:hi],
        regimes=None if regimes is None else {k: np.asarray(v)[lo:hi] for k, v in regimes.items()},
        hold_from_start=_held_from_start(strategy),
    )  # fmt: skip


def evaluate_fold(
    fold: Fold,
    candles: Mapping[str, np.ndarray],
    strategy: Strategy,
    grid: Sequence[Mapping[str, Any]],
    config: BacktestConfig,
    objective: str = "sharpe",
    *,
    regimes: Mapping[str, np.ndarray] | None = None,
    funding_rate: np.ndarray | None = None,
) -> dict[str, Any]:
    """Choose on train, evaluate out of sample. ``strategy`` is a built-in's name or any
    :class:`~compute.backtest.plugins.StrategyPlugin` (a Python plugin, a compiled spec).
    ``candles`` holds ts/open/high/low/close (and volume, for plugins that read it) over all
    bars; ``regimes`` (``"vol"``/``"trend"`` label arrays over all bars) should be given,
    else each window computes its own from its bars only.

    Returns ``fold`` (indices), ``params`` (chosen), ``is_metrics``, ``oos_metrics``,
    ``is_scores`` (objective per grid point), ``oos_ts`` / ``oos_returns`` (per-bar returns
    of the test window, bar 0 excluded), ``oos_trades`` and ``regime_checks``.
    """
    if objective not in OBJECTIVES:
        raise SpecError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if not grid:
        raise SpecError("the parameter grid is empty")
    checked = [_validate(strategy, p) for p in grid]
    scores, train_runs = [], []
    for params in checked:
        res = _run(candles, fold.train_start, fold.train_end, strategy, params, config, regimes,
                   funding_rate)  # fmt: skip
        scores.append(_score(res.metrics, objective))
        train_runs.append(res)
    best = int(np.argmax(scores)) if any(math.isfinite(s) for s in scores) else 0
    oos = _run(candles, fold.test_start, fold.test_end, strategy, checked[best], config, regimes,
               funding_rate)  # fmt: skip
    return {
        "fold": fold.as_dict(),
        "params": checked[best],
        "objective": objective,
        "is_scores": [s if math.isfinite(s) else None for s in scores],
        "is_metrics": train_runs[best].metrics,
        "oos_metrics": oos.metrics,
        "oos_ts": oos.equity["ts"][1:],
        "oos_returns": oos.equity["returns"][1:],
        "oos_trades": oos.trades,
        "regime_checks": regime_checks(oos.regime_stats),
    }


def _prepared(
    candles: Mapping[str, np.ndarray],
    lo: int,
    hi: int,
    pos: np.ndarray,
    config: BacktestConfig,
    funding: np.ndarray | None,
    hold: bool,
) -> Prepared:
    w = _window(candles, lo, hi)
    return prepare(
        w["ts"], w["open"], w["high"], w["low"], w["close"], pos[lo:hi], config,
        funding_rate=None if funding is None else funding[lo:hi], hold_from_start=hold,
    )  # fmt: skip


def _window_regimes(
    regimes: Mapping[str, np.ndarray] | None, lo: int, hi: int
) -> dict[str, npt.ArrayLike] | None:
    return None if regimes is None else {k: np.asarray(v)[lo:hi] for k, v in regimes.items()}


def evaluate_folds(
    folds: Sequence[Fold],
    candles: Mapping[str, np.ndarray],
    strategy: Strategy,
    grid: Sequence[Mapping[str, Any]],
    config: BacktestConfig,
    objective: str = "sharpe",
    *,
    regimes: Mapping[str, np.ndarray] | None = None,
    funding_rate: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """:func:`evaluate_fold` for every fold of ``folds``, batched (see the module doc)."""
    if objective not in OBJECTIVES:
        raise SpecError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if not grid:
        raise SpecError("the parameter grid is empty")
    checked = [_validate(strategy, p) for p in grid]
    hold = _held_from_start(strategy)
    cache: dict[tuple[int, int], np.ndarray] = {}

    def signal(g: int, hi: int) -> np.ndarray:
        """Positions of grid point ``g`` from every bar up to ``hi`` (causal signals: earlier
        history is warm-up), computed once per (point, end)."""
        if (g, hi) not in cache:
            c = _window(candles, 0, hi)
            if "volume" in candles and not isinstance(strategy, str):
                c["volume"] = np.asarray(candles["volume"])[:hi]
            cache[(g, hi)] = np.asarray(_positions(strategy, checked[g], c))
        return cache[(g, hi)]

    train = []
    for fold in folds:
        for g in range(len(checked)):
            pos = signal(g, fold.train_end)
            train.append(
                _prepared(
                    candles, fold.train_start, fold.train_end, pos, config, funding_rate, hold
                )
            )
    outs = simulate_many(train)
    ppy, rf = config.periods_per_year, config.risk_free_rate
    scores = [
        _finite(objective_value(returns_from_equity(out[1]), objective, ppy, rf)) for out in outs
    ]
    n_grid = len(checked)
    chosen, tests = [], []
    for k, fold in enumerate(folds):
        row = scores[k * n_grid : (k + 1) * n_grid]
        best = int(np.argmax(row)) if any(math.isfinite(x) for x in row) else 0
        chosen.append((best, row))
        pos = signal(best, fold.test_end)
        tests.append(
            _prepared(candles, fold.test_start, fold.test_end, pos, config, funding_rate, hold)
        )
    test_outs = simulate_many(tests)
    results = []
    for k, fold in enumerate(folds):
        best, row = chosen[k]
        is_run = finish(
            train[k * n_grid + best],
            outs[k * n_grid + best],
            _window_regimes(regimes, fold.train_start, fold.train_end),
        )
        oos = finish(
            tests[k], test_outs[k], _window_regimes(regimes, fold.test_start, fold.test_end)
        )
        results.append(
            {
                "fold": fold.as_dict(),
                "params": checked[best],
                "objective": objective,
                "is_scores": [x if math.isfinite(x) else None for x in row],
                "is_metrics": is_run.metrics,
                "oos_metrics": oos.metrics,
                "oos_ts": oos.equity["ts"][1:],
                "oos_returns": oos.equity["returns"][1:],
                "oos_trades": oos.trades,
                "regime_checks": regime_checks(oos.regime_stats),
            }
        )
    return results


def regime_checks(regime_stats: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each regime's bars and trades, flagged ``insufficient`` below the minimums."""
    return [
        {
            "kind": r["kind"],
            "regime": r["regime"],
            "bars": r["bars"],
            "trades": r["trades"],
            "min_bars": MIN_REGIME_BARS,
            "min_trades": MIN_REGIME_TRADES,
            "insufficient": r["bars"] < MIN_REGIME_BARS or r["trades"] < MIN_REGIME_TRADES,
        }
        for r in regime_stats
        if r["regime"] != "MISSING" or r["bars"] > 0
    ]


def stitch(
    fold_results: Sequence[Mapping[str, Any]], periods_per_year: float, initial_capital: float = 1.0
) -> dict[str, Any]:
    """Chain the folds' OOS returns (in fold order, skipping bars an earlier fold covered) into
    one equity curve: ``{"ts", "equity", "returns", "metrics"}``."""
    ts_parts, r_parts, last = [], [], -math.inf
    for res in fold_results:
        ts = np.asarray(res["oos_ts"])
        keep = ts > last
        ts_parts.append(ts[keep])
        r_parts.append(np.asarray(res["oos_returns"])[keep])
        if ts.size:
            last = max(last, float(ts[-1]))
    ts_all = np.concatenate(ts_parts) if ts_parts else np.zeros(0, np.int64)
    r_all = np.concatenate(r_parts) if r_parts else np.zeros(0)
    equity = initial_capital * np.cumprod(1.0 + r_all)
    return {
        "ts": ts_all,
        "equity": equity,
        "returns": r_all,
        "metrics": return_metrics(r_all, periods_per_year),
    }


def decay_report(
    fold_results: Sequence[Mapping[str, Any]], objective: str = "sharpe"
) -> dict[str, Any]:
    """OOS/IS ratio per fold, OOS trend across folds and the ``fading`` flag (module docstring)."""
    is_v = [_score(r["is_metrics"], objective) for r in fold_results]
    oos_v = [_score(r["oos_metrics"], objective) for r in fold_results]
    ratios = [
        o / i if math.isfinite(i) and math.isfinite(o) and i > 0 else None
        for i, o in zip(is_v, oos_v, strict=True)
    ]
    known = [x for x in ratios if x is not None]
    median_ratio = float(np.median(known)) if known else None
    pts = [(k, v) for k, v in enumerate(oos_v) if math.isfinite(v)]
    slope = t_stat = None
    if len(pts) >= 3:
        x = np.array([p[0] for p in pts], float)
        y = np.array([p[1] for p in pts], float)
        xc = x - x.mean()
        slope = float((xc * (y - y.mean())).sum() / (xc * xc).sum())
        resid = y - y.mean() - slope * xc
        dof = len(pts) - 2
        se = math.sqrt(float((resid * resid).sum()) / dof / float((xc * xc).sum())) if dof else 0.0
        t_stat = slope / se if se > 0 else (-math.inf if slope < 0 else math.inf)
    fading = (median_ratio is not None and median_ratio < FADING_RATIO) or (
        slope is not None and slope < 0 and t_stat is not None and t_stat <= FADING_T
    )
    return {
        "objective": objective,
        "is": [v if math.isfinite(v) else None for v in is_v],
        "oos": [v if math.isfinite(v) else None for v in oos_v],
        "oos_is_ratio": ratios,
        "median_ratio": median_ratio,
        "oos_slope": slope,
        "oos_slope_t": t_stat if t_stat is None or math.isfinite(t_stat) else None,
        "fading": bool(fading),
        "rule": f"fading when the median OOS/IS ratio < {FADING_RATIO} or (>= 3 folds) the "
        f"OOS {objective} falls across folds with a slope t-statistic <= {FADING_T}",
    }


def returns_of(equity: np.ndarray) -> np.ndarray:
    """Per-bar returns of an equity curve (re-exported for callers stitching by hand)."""
    return returns_from_equity(equity)
