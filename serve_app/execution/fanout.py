"""Run one function over many items as Ray tasks, or in-process when Ray is not running.

The shared input (candle arrays) is ``ray.put`` once and every task gets the reference; at
most ``max_in_flight`` tasks are outstanding (bounded ``ray.wait``), so a long list never
floods the scheduler or the object store. Results come back in item order; ``on_done`` is
called as each finishes (progress). Without an initialised Ray runtime the same function runs
in this process, so the API and the tests work without a cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

_REMOTE: dict[tuple[Callable[..., Any], int], Any] = {}


def ray_running() -> bool:
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a dependency
        return False
    return bool(ray.is_initialized())


def _remote(fn: Callable[..., Any], num_cpus: int) -> Any:
    import ray

    key = (fn, num_cpus)
    if key not in _REMOTE:
        _REMOTE[key] = ray.remote(num_cpus=num_cpus)(fn)
    return _REMOTE[key]


def fan_out(
    fn: Callable[..., Any],
    items: Sequence[Any],
    shared: Any,
    *,
    max_in_flight: int | None = None,
    on_done: Callable[[int, Any], None] | None = None,
    use_ray: bool | None = None,
    num_cpus: int = 1,
) -> tuple[list[Any], dict[str, Any]]:
    """``[fn(shared, item) for item in items]``, as Ray tasks when Ray is up.

    Returns the results in item order and a note of how they ran (``ray``, ``tasks``,
    ``max_in_flight``, ``workers``: the cluster's CPUs).
    """
    use_ray = ray_running() if use_ray is None else use_ray
    results: list[Any] = [None] * len(items)
    if not use_ray:
        for i, item in enumerate(items):
            results[i] = fn(shared, item)
            if on_done is not None:
                on_done(i, results[i])
        return results, {"ray": False, "tasks": len(items), "workers": 1}
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1))
    bound = max_in_flight or max(2, 2 * cpus)
    remote = _remote(fn, num_cpus)
    ref = ray.put(shared)
    pending: dict[Any, int] = {}
    nxt = 0
    while nxt < len(items) or pending:
        while nxt < len(items) and len(pending) < bound:
            pending[remote.remote(ref, items[nxt])] = nxt
            nxt += 1
        done, _ = ray.wait(list(pending), num_returns=1)
        for obj in done:
            i = pending.pop(obj)
            results[i] = ray.get(obj)
            if on_done is not None:
                on_done(i, results[i])
    return results, {"ray": True, "tasks": len(items), "max_in_flight": bound, "workers": cpus}
