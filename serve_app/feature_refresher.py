"""Keeps the feature store current: after every bar close, each configured series' newest
block of feature rows is recomputed from the stored candles (``serve_app.services.features``).

A detached, named async Ray actor (get-or-create, like the ingestion supervisor). It lives in
``serve_app`` because it joins ``compute`` and ``storage``; ingestion may import neither.
Incremental runs recompute only the newest stored block and later ones, so a run costs one
block (2,048 bars plus look-back) per series however long the history is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from serve_app.services.features import materialize
from storage.engine import make_engine, session_factory
from storage.intervals import interval_seconds

log = logging.getLogger("squall.features")

REFRESHER_NAME = "squall-feature-refresher"
NAMESPACE = "squall"


class FeatureRefresher:
    """One loop per (coin, interval): materialise the new tail after each bar close."""

    def __init__(
        self,
        database_url: str,
        series: list[tuple[str, str]],
        delay_s: float = 10.0,
        autostart: bool = True,
    ) -> None:
        self.engine = make_engine(database_url)
        self.sessions = session_factory(self.engine)
        self.series = series
        self.delay_s = delay_s
        self.stats: dict[str, dict[str, Any]] = {
            f"{c}:{i}": {"runs": 0, "rows_written": 0, "last_run_ts": None, "last_error": None}
            for c, i in series
        }
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        if autostart:
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._loop(c, i)) for c, i in series]

    async def _loop(self, coin: str, interval: str) -> None:
        step = interval_seconds(interval)
        key = f"{coin}:{interval}"
        while not self._stop.is_set():
            try:
                written = await asyncio.to_thread(materialize, self.sessions, coin, interval)
                self.stats[key]["rows_written"] += written
                self.stats[key]["last_error"] = None
            except Exception as exc:  # no candles yet, database busy ...: report and go on
                self.stats[key]["last_error"] = f"{exc.__class__.__name__}: {exc}"[:300]
                log.warning("feature refresh %s failed: %s", key, exc)
            self.stats[key]["runs"] += 1
            self.stats[key]["last_run_ts"] = int(time.time())
            now = time.time()
            due = (now // step + 1) * step + self.delay_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=due - now)

    async def status(self) -> dict[str, Any]:
        return {"running": not self._stop.is_set(), "series": self.stats}

    async def stop(self, timeout_s: float = 60.0) -> dict[str, Any]:
        self._stop.set()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout_s)
        return await self.status()


def get_or_create(database_url: str, series: list[tuple[str, str]], **options: Any) -> Any:
    import ray

    return (
        ray.remote(FeatureRefresher)
        .options(
            name=options.pop("name", REFRESHER_NAME),
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            num_cpus=0,
        )
        .remote(database_url, series, **options)
    )
