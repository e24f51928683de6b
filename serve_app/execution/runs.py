"""How a recorded run executes: its heartbeat, its progress, and how it is cancelled.

A :class:`RunContext` wraps the execution of one registry run wherever it happens (the API
replica for a small synchronous request, a warm worker for an asynchronous one, a Ray job for
a sweep). While it is open, a daemon thread refreshes the run's ``heartbeat_at`` every
``heartbeat_s`` and reads back whether a cancel was asked; progress is written with the next
beat (never more often than the beat), so a million-path simulation does not write the
database per chunk. The fan-out loops call :meth:`RunContext.check` between results: after a
cancel they cancel their outstanding Ray tasks and raise :class:`RunCancelledError`, which the
services record as status ``cancelled``.

If the process running a run dies, nothing beats any more: :func:`reaper_loop` (every API
replica and ``squall up`` run one) marks runs whose heartbeat is older than the timeout as
``failed`` with the reason.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from storage.engine import transaction
from storage.runs import RunRepository

log = logging.getLogger("squall.runs")


class RunCancelledError(Exception):
    """The run was asked to stop (``DELETE /runs/{id}``); raised at its next progress point."""


def worker_name() -> str:
    """Where this process runs: the Ray node id (when inside Ray) and the pid."""
    node = ""
    try:
        import ray

        if ray.is_initialized():
            node = ray.get_runtime_context().get_node_id()[:12] + "/"
    except Exception:  # not inside Ray, or Ray shutting down
        node = ""
    return f"{node}pid{os.getpid()}"


class RunContext:
    """Heartbeat, progress and cancel flag of one running run (a context manager).

    ``on_cancel`` callbacks run once, on the heartbeat thread, when a cancel is seen: the
    fan-out registers one that cancels its in-flight Ray tasks, so they end promptly even
    while the driver waits on a result.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session] | None,
        run_id: str | None,
        *,
        heartbeat_s: float = 2.0,
        unit: str = "items",
        total: int | None = None,
    ) -> None:
        self.sessions = sessions
        self.run_id = run_id
        self.heartbeat_s = heartbeat_s
        self.unit = unit
        self._progress: dict[str, Any] | None = (
            None if total is None else {"done": 0, "total": int(total), "unit": unit}
        )
        self._dirty = self._progress is not None
        self._cancelled = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self._thread: threading.Thread | None = None

    # --------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> RunContext:
        if self.sessions is not None and self.run_id is not None:
            self._beat()
            self._thread = threading.Thread(
                target=self._loop, name=f"heartbeat-{self.run_id}", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.heartbeat_s + 5)

    def _loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self._beat()

    def _beat(self) -> None:
        assert self.sessions is not None and self.run_id is not None
        with self._lock:
            progress = dict(self._progress) if self._dirty and self._progress else None
            self._dirty = False
        try:
            with transaction(self.sessions) as session:
                asked = RunRepository(session).beat(self.run_id, int(time.time()), progress)
        except Exception as exc:  # a database hiccup must not kill the work; next beat retries
            log.warning("heartbeat of run %s failed: %s", self.run_id, exc)
            with self._lock:
                self._dirty = self._dirty or progress is not None
            return
        if asked and not self._cancelled.is_set():
            self.cancel()

    # ----------------------------------------------------------------------------- progress
    def progress(self, done: int, total: int | None = None) -> None:
        """Work done so far (written with the next heartbeat)."""
        with self._lock:
            if self._progress is None:
                self._progress = {"done": 0, "total": int(total or 0), "unit": self.unit}
            self._progress["done"] = int(done)
            if total is not None:
                self._progress["total"] = int(total)
            self._dirty = True

    @property
    def current(self) -> dict[str, Any] | None:
        with self._lock:
            return None if self._progress is None else dict(self._progress)

    # ------------------------------------------------------------------------------ cancel
    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run ``callback`` when a cancel is seen (at once if it already was); returns a
        function that unregisters it."""
        with self._lock:
            self._callbacks.append(callback)
        if self._cancelled.is_set():
            callback()

        def remove() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return remove

    def cancel(self) -> None:
        """Mark this run cancelled here (also what a seen cancel request does)."""
        self._cancelled.set()
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback()
            except Exception as exc:  # cancelling is best effort
                log.warning("cancel callback of run %s failed: %s", self.run_id, exc)

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def check(self) -> None:
        """Raise :class:`RunCancelledError` if a cancel was asked."""
        if self._cancelled.is_set():
            raise RunCancelledError(f"run {self.run_id} was cancelled")


NO_RUN = RunContext(None, None)  # for work outside the registry (tests, benchmarks)


def reaper_loop(
    database_url: str,
    timeout_s: float,
    stop: threading.Event,
    every_s: float,
    queued_timeout_s: float | None = None,
) -> None:
    """Until ``stop``: mark running runs whose heartbeat is older than ``timeout_s`` (and
    queued ones older than ``queued_timeout_s``) as failed, on its own small engine so the
    serving pool is not touched."""
    from serve_app.services.runs import fail_stale
    from storage.engine import make_engine, session_factory

    engine = make_engine(database_url, pool_size=1, max_overflow=1)
    sessions = session_factory(engine)
    try:
        while True:
            try:
                stale = fail_stale(sessions, timeout_s, queued_timeout_s)
                if stale:
                    log.warning("marked %d run(s) failed (no heartbeat): %s", len(stale), stale)
            except Exception as exc:  # database down or not migrated yet: next round
                log.debug("stale-run check failed: %s", exc)
            if stop.wait(every_s):
                return
    finally:
        engine.dispose()


def start_reaper(
    database_url: str,
    timeout_s: float,
    every_s: float | None = None,
    queued_timeout_s: float | None = None,
) -> threading.Event:
    """Run :func:`reaper_loop` on a daemon thread; set the returned event to stop it."""
    stop = threading.Event()
    every = every_s or max(1.0, timeout_s / 3)
    threading.Thread(
        target=reaper_loop,
        args=(database_url, timeout_s, stop, every, queued_timeout_s),
        name="stale-run-reaper",
        daemon=True,
    ).start()
    return stop
