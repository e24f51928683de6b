"""Hand an asynchronous run to a warm worker, and what the worker does with it.

The caller (an API replica, the CLI) checks and prepares the request, records the run as
``queued`` and calls :func:`launch` with a *driver*: a module-level function
``driver(settings_values, run_id, *args)`` named as ``"module:function"``. A warm worker's
``driver`` slot runs it: :func:`claimed` moves the run to ``running`` (or reports that it was
cancelled meanwhile), opens its database from the settings, and the driver executes the run
inside a :class:`~serve_app.execution.runs.RunContext` (heartbeat, progress, cancel). Nothing
runs on a thread of the caller: if the replica goes away, the run goes on; if the worker goes
away, the run's heartbeat stops and the reaper marks it failed. The driver runs on a worker of
the caller's own node (when it has one), so the run shares the caller's fate and no other's.

Without a Ray runtime (plain uvicorn, some tests) the driver runs in the calling thread before
``launch`` returns: the run is still recorded, followed and cancellable the same way.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from serve_app.execution.fanout import ray_running
from serve_app.execution.runs import worker_name
from storage.engine import make_engine, session_factory, transaction
from storage.runs import RunRepository

_SESSIONS: dict[str, sessionmaker[Session]] = {}
_LOCK = threading.Lock()


def sessions_for(database_url: str) -> sessionmaker[Session]:
    """One engine per database per worker process, kept for the process's life."""
    with _LOCK:
        if database_url not in _SESSIONS:
            _SESSIONS[database_url] = session_factory(make_engine(database_url))
        return _SESSIONS[database_url]


def claimed(sessions: sessionmaker[Session], run_id: str) -> bool:
    """Move a queued run to running here; False when it was cancelled before it started."""
    import time

    with transaction(sessions) as session:
        return RunRepository(session).claim(run_id, int(time.time()), worker_name())


def launch(driver: str, settings_values: dict[str, Any], run_id: str, *args: Any) -> str:
    """Start ``driver`` for a queued run on a warm worker; returns where it runs."""
    if not ray_running():
        from serve_app.execution.workers import _resolve

        _resolve(driver)(settings_values, run_id, *args)
        return "in-process (no Ray runtime)"
    import ray

    from serve_app.execution.workers import pool

    # The driver mostly waits on its fan-out: keep it on the caller's node, so losing another
    # node costs only the chunks that were there (the fan-out sends them again), not the run.
    worker = pool().pick(ray.get_runtime_context().get_node_id())
    ref = worker.handle.drive.remote(driver, settings_values, run_id, *args)
    url = str(settings_values["database_url"])
    ref.future().add_done_callback(lambda done: _handed_over(url, run_id, done))
    return worker.name


def _handed_over(database_url: str, run_id: str, done: Any) -> None:
    """When a driver call ends in an error (its worker or node died before or while running
    it), record that on the run at once instead of waiting for the reaper."""
    import time

    exc = done.exception()
    if exc is None:
        return
    try:
        with transaction(sessions_for(database_url)) as session:
            repo = RunRepository(session)
            run = repo.get(run_id, payload=False)
            if run is not None and run.status in ("queued", "running"):
                repo.update(
                    run_id,
                    status="failed",
                    error=f"the worker running it failed: {type(exc).__name__}: {exc}"[:2000],
                    finished_at=int(time.time()),
                )
    except Exception:  # the reaper still marks it once its heartbeat is stale
        return
