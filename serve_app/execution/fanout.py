"""Run one function over many items on the warm workers, or in this process.

``fan_out(fn, items, shared)`` is ``[fn(shared, item) for item in items]``:

* in this process when Ray is not running, when asked (``use_ray=False``: work smaller than
  one task's worth runs where it already is), or when there is one item;
* else on the warm compute workers of every node (:mod:`serve_app.execution.workers`): the
  shared input is ``ray.put`` once, each worker has at most ``per_worker`` calls outstanding
  (one computing, one queued behind it so the worker never waits on a round trip), results
  come back in item order and ``on_done`` is called as each finishes (progress).

A call whose worker died (process killed, or node lost: its pinned actor cannot come back) is
sent again to another worker, up to
``MAX_ATTEMPTS`` times; items are pure functions of their inputs, so the result is the same
bits. With a :class:`~serve_app.execution.runs.RunContext`, a cancel cancels every
outstanding call and raises :class:`~serve_app.execution.runs.RunCancelledError`.

The returned note says how the work ran: ``ray``, ``tasks``, ``workers`` (their pids),
``nodes``, ``compiles`` (XLA compilations the work caused; 0 = every worker was warm) and
``warm``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from serve_app.execution.compiles import call_counted
from serve_app.execution.runs import NO_RUN, RunCancelledError, RunContext
from serve_app.execution.workers import Worker, pool

MAX_ATTEMPTS = 4


def ray_running() -> bool:
    """Whether this process is connected to Ray (never imports Ray just to ask)."""
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


def _local(
    fn: Callable[..., Any],
    items: Sequence[Any],
    shared: Any,
    on_done: Callable[[int, Any], None] | None,
    ctx: RunContext,
) -> tuple[list[Any], dict[str, Any]]:
    results: list[Any] = []
    compiles = loads = 0
    for i, item in enumerate(items):
        ctx.check()
        result, cost = call_counted(fn, shared, item)
        compiles += cost["compiles"]
        loads += cost["cache_loads"]
        results.append(result)
        if on_done is not None:
            on_done(i, result)
    return results, {
        "ray": False,
        "where": "in-process",
        "tasks": len(items),
        "workers": [os.getpid()],
        "compiles": compiles,
        "cache_loads": loads,
        "warm": compiles == 0 and loads == 0,
    }


def fan_out(
    fn: Callable[..., Any],
    items: Sequence[Any],
    shared: Any,
    *,
    on_done: Callable[[int, Any], None] | None = None,
    use_ray: bool | None = None,
    per_worker: int = 2,
    ctx: RunContext = NO_RUN,
) -> tuple[list[Any], dict[str, Any]]:
    """``[fn(shared, item) for item in items]`` on the warm workers (see the module doc)."""
    use_ray = ray_running() if use_ray is None else use_ray
    if not use_ray or not items:
        return _local(fn, items, shared, on_done, ctx)
    import ray
    from ray.exceptions import ActorUnschedulableError, RayActorError

    # a worker's process died (RayActorError), or its node did and the pinned actor cannot
    # come back there (ActorUnschedulableError): either way, the item goes to another worker
    lost = (RayActorError, ActorUnschedulableError)

    workers = pool().workers()
    if not workers:
        return _local(fn, items, shared, on_done, ctx)
    ref = ray.put(shared)
    results: list[Any] = [None] * len(items)
    pending: dict[Any, tuple[int, Worker, int]] = {}  # ref -> (item, worker, attempt)
    load = {w.name: 0 for w in workers}
    queue = list(range(len(items)))
    attempts = [0] * len(items)
    pids: set[int] = set()
    nodes: set[str] = set()
    compiles = loads = 0

    def submit(i: int) -> None:
        worker = min(workers, key=lambda w: load[w.name])
        load[worker.name] += 1
        attempts[i] += 1
        pending[worker.handle.call.remote(fn, ref, items[i])] = (i, worker, attempts[i])

    def cancel_all() -> None:
        for r in list(pending):
            ray.cancel(r)

    remove = ctx.on_cancel(cancel_all)
    try:
        while queue or pending:
            ctx.check()
            while queue and min(load.values()) < per_worker:
                submit(queue.pop(0))
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for obj in ready:
                i, worker, attempt = pending.pop(obj)
                if worker.name in load:  # not yet dropped by an earlier lost call
                    load[worker.name] -= 1
                try:
                    result, cost = ray.get(obj)
                except lost:
                    ctx.check()
                    # its worker (or node) is gone: drop it, send the item elsewhere (several
                    # calls may have been outstanding on it; each goes to a worker still alive)
                    workers = [w for w in workers if w.name != worker.name]
                    if attempt >= MAX_ATTEMPTS or not workers:
                        raise
                    pool().forget(worker)
                    load.pop(worker.name, None)
                    queue.insert(0, i)
                    continue
                except ray.exceptions.TaskCancelledError:
                    raise RunCancelledError("cancelled") from None
                results[i] = result
                pids.add(cost["pid"])
                nodes.add(worker.node_id)
                compiles += cost["compiles"]
                loads += cost["cache_loads"]
                if on_done is not None:
                    on_done(i, result)
    except BaseException:
        for r in pending:
            ray.cancel(r)
        raise
    finally:
        remove()
    return results, {
        "ray": True,
        "where": "warm workers",
        "tasks": len(items),
        "workers": sorted(pids),
        "nodes": sorted(nodes),
        "retried": sum(a - 1 for a in attempts),
        "compiles": compiles,
        "cache_loads": loads,
        "warm": compiles == 0 and loads == 0,
    }
