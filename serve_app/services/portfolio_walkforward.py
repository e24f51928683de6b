"""Walk-forward of a momentum portfolio: per fold, choose the rule's lookback / top_k /
short_k on the train bars, evaluate the choice out of sample; stitch, decay, registry.

The folds are cut from the aligned timeline (``compute.backtest.walkforward.make_folds``).
Targets of every grid point are computed once over all bars (the momentum rule is causal:
earlier bars only serve as its look-back), and each train or test window is backtested on its
own, flat with fresh capital (``run_portfolio(..., window=(lo, hi))``). The chosen point
maximises the objective on train (undefined ranks last, ties to the earlier point); the test
windows' returns are chained into one out-of-sample curve (``stitch``) and the OOS/IS decay is
reported (``decay_report``), as for a single-coin walk-forward. Runs in this process (a
portfolio window costs milliseconds); recorded as kind ``walkforward``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from compute.core.errors import ComputeError
from serve_app.services import portfolio
from serve_app.services.requests.portfolio import MomentumRule, PortfolioWalkForwardRequest
from serve_app.services.results import plain, thin_indices
from serve_app.services.runs import fail_run, start_run
from serve_app.services.sweep import grid_combos
from serve_app.services.walkforward import MAX_GRID, plan_folds
from serve_app.settings import Settings
from serve_app.timefmt import iso
from storage.engine import transaction
from storage.errors import ConfigurationError, LimitExceededError
from storage.runs import RunRepository

MAX_WINDOWS = 20_000  # portfolio windows (folds x grid + folds) of one walk-forward


def check_grid(req: PortfolioWalkForwardRequest, coins: int) -> list[MomentumRule]:
    """The grid's momentum rules, each validated; 422 saying what to fix."""
    base = req.strategy.momentum
    if base is None:
        raise ConfigurationError(
            "a portfolio walk-forward searches the momentum rule: give strategy.momentum "
            "(its values are the defaults of what the grid does not search)",
            code="invalid_strategy",
            parameter="strategy",
        )
    if not req.grid or any(not v for v in req.grid.values()):
        raise ConfigurationError(
            "the grid is empty: give lookback, top_k and/or short_k with one or more values",
            code="empty_grid",
            parameter="grid",
        )
    size = math.prod(len(v) for v in req.grid.values())
    if size > MAX_GRID:
        raise LimitExceededError(
            f"the grid has {size} parameter sets; at most {MAX_GRID}",
            code="grid_too_large",
            parameter="grid",
            cap=MAX_GRID,
        )
    rules = []
    for combo in grid_combos({str(k): list(v) for k, v in req.grid.items()}):
        try:
            rule = MomentumRule.model_validate({**base.model_dump(), **combo})
        except ValueError as exc:
            raise ConfigurationError(
                f"grid point {combo}: {exc}", code="invalid_parameter", parameter="grid"
            ) from None
        portfolio.check_momentum(rule, coins)
        rules.append(rule)
    return rules


def _score(metrics: dict[str, Any], objective: str) -> float:
    value = metrics.get(objective)
    return float(value) if value is not None and math.isfinite(float(value)) else -math.inf


def _span(ts: np.ndarray, lo: int, hi: int) -> dict[str, Any]:
    first, last = int(ts[lo]), int(ts[hi - 1])
    return {"start_bar": lo, "end_bar": hi - 1, "bars": hi - lo, "start_ts": iso(first),
            "start_ts_unix": first, "end_ts": iso(last), "end_ts_unix": last}  # fmt: skip


def evaluate(prep: Any, rules: list[MomentumRule], folds: list[Any], objective: str) -> list[Any]:
    """Per fold: every rule on train, the best on test (fold results as compute's)."""
    targets = [portfolio.targets_of(prep, rule)[0] for rule in rules]
    out = []
    for fold in folds:
        train = [
            portfolio.simulate(prep, t, window=(fold.train_start, fold.train_end), regimes=False)
            for t in targets
        ]
        scores = [_score(r.metrics, objective) for r in train]
        best = int(np.argmax(scores)) if any(math.isfinite(s) for s in scores) else 0
        test = portfolio.simulate(
            prep, targets[best], window=(fold.test_start, fold.test_end), regimes=False
        )
        out.append({
            "fold": fold, "params": rules[best].model_dump(),
            "is_scores": [s if math.isfinite(s) else None for s in scores],
            "is_metrics": train[best].metrics, "oos_metrics": test.metrics,
            "oos_ts": test.equity["ts"][1:], "oos_returns": test.equity["returns"][1:],
        })  # fmt: skip
    return out


def run_walkforward(
    sessions: sessionmaker[Session], settings: Settings, req: PortfolioWalkForwardRequest
) -> dict[str, Any]:
    """Validate, read, align, cut the folds, run and record a portfolio walk-forward."""
    from compute.backtest.walkforward import decay_report, stitch

    rules = check_grid(req, len(req.coins))
    prep = portfolio.prepare(sessions, settings, req)
    length = int(prep.aligned.ts.shape[0])
    folds = plan_folds(length, req)
    if len(folds) * (len(rules) + 1) > MAX_WINDOWS:
        raise LimitExceededError(
            f"{len(folds)} folds x {len(rules)} parameter sets exceed {MAX_WINDOWS} portfolio "
            "windows; use fewer folds (a larger step_bars) or a smaller grid",
            code="too_much_work",
            cap=MAX_WINDOWS,
        )
    run_id, created = start_run(
        sessions, "walkforward", req, interval=prep.interval, strategy="momentum",
        seed=req.seed, progress={"done": 0, "total": len(folds), "unit": "folds"},
    )  # fmt: skip
    started = time.perf_counter()
    try:
        results = evaluate(prep, rules, folds, req.objective)
        oos = stitch(results, prep.config.periods_per_year)
        decay = plain(decay_report(results, req.objective))
    except ComputeError as exc:
        fail_run(sessions, run_id, exc, started)
        raise ConfigurationError(f"{exc}; fix that field", code="invalid_parameter") from None
    except BaseException as exc:
        fail_run(sessions, run_id, exc, started)
        raise
    duration = time.perf_counter() - started
    ts = prep.aligned.ts
    folds_out = [
        {"index": r["fold"].index, "train": _span(ts, r["fold"].train_start, r["fold"].train_end),
         "test": _span(ts, r["fold"].test_start, r["fold"].test_end),
         "purge_bars": r["fold"].test_start - r["fold"].train_end, "chosen_params": r["params"],
         "is_scores": r["is_scores"], "is_metrics": plain(r["is_metrics"]),
         "oos_metrics": plain(r["oos_metrics"]), "oos_is_ratio": decay["oos_is_ratio"][k]}
        for k, r in enumerate(results)
    ]  # fmt: skip
    used = {**portfolio.used_block(prep, None), "grid": {k: list(v) for k, v in req.grid.items()}}
    metrics = plain(oos["metrics"])
    oos_ts, oos_eq = np.asarray(oos["ts"], np.int64), np.asarray(oos["equity"], np.float64)
    with transaction(sessions) as session:
        RunRepository(session).update(
            run_id, status="succeeded", data_fingerprint=prep.fingerprint, duration_s=duration,
            finished_at=int(time.time()),
            summary={**metrics, "folds": len(folds), "fading": decay["fading"]},
            equity={"ts": oos_ts, "equity": oos_eq},
            results={"folds": folds_out, "decay": decay, "used": used, "grid_size": len(rules)},
            progress={"done": len(folds), "total": len(folds), "unit": "folds"},
        )  # fmt: skip
    idx, stride = thin_indices(len(oos_ts), req.equity_points)
    return {
        "run_id": run_id, "kind": "walkforward", "created_at": iso(created),
        "created_at_unix": created, "duration_s": duration, "used": used,
        "grid_size": len(rules), "folds": folds_out,
        "oos": {"metrics": metrics, "bars": len(oos_ts),
                "equity": {"ts_unix": oos_ts[idx].tolist(), "equity": oos_eq[idx].tolist(),
                           "stride": stride}},
        "decay": decay,
    }  # fmt: skip
