"""Warm compute workers: a few long-lived Ray actors per node that keep JAX imported and the
kernels compiled, so a request pays for its work and not for a worker start.

Why actors and not plain tasks: a task with its own ``runtime_env`` (the XLA flags below) runs
in a dedicated worker process, and Ray ends idle workers once a node is past its soft limit
(the Serve controller, proxy and replicas already are), so nearly every request used to start
fresh processes that imported JAX and compiled again (3.3-3.7 s for a 20k-path simulation
whose kernel needs ~15 ms). An actor lives until it is killed.

Layout: ``workers_per_node`` actors on every alive node (default: the node's CPUs), named
``squall-compute-<node>-<i>`` in namespace ``squall``, detached and get-or-create, so every
replica, ``squall up`` and a restart find the same ones; each is pinned to its node (node
affinity) and reserves no logical CPU (it runs the work its caller would otherwise have run).
An actor that dies is restarted by Ray (``max_restarts=-1``) and warms itself up again
before callers see it: the pool hands out only actors that answered a ping as warm; calls that
failed because their actor died are retried on another one by the fan-out.

Inside an actor, two concurrency groups: ``compute`` (one call at a time: one actor per core,
XLA single-threaded) and ``driver`` (a few at a time, for runs that drive a fan-out of their
own and mostly wait).
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray

from serve_app.allocator import worker_env
from serve_app.execution.compiles import COMPILES, cache_env, call_counted, configure_cache

log = logging.getLogger("squall.workers")

NAMESPACE = "squall"
NAME_PREFIX = "squall-compute"
# XLA:CPU splits large loops over a thread pool the size of the machine; with one worker per
# core that oversubscribes every core and costs ~20 % (measured on 2 cores: 449-524 vs 359-419
# M path-steps/s). Workers run single-threaded XLA.
WORKER_XLA_FLAGS = (
    "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1 "
    "--xla_cpu_parallel_codegen_split_count=1"
)
NODES_TTL_S = 5.0
PING_TIMEOUT_S = 2.0


# -------------------------------------------------------------------------------- the actor
class ComputeWorker:
    """One warm worker process (a Ray actor); see the module docstring."""

    def __init__(self, node_id: str, index: int, warm_up: bool = True) -> None:
        self.node_id = node_id
        self.index = index
        self.started = time.time()
        self.calls = 0
        self.warm = threading.Event()
        configure_cache(os.environ.get("JAX_COMPILATION_CACHE_DIR"))
        COMPILES.install()
        if warm_up:
            threading.Thread(target=self._warm_up, name="warm-up", daemon=True).start()
        else:
            self.warm.set()

    def _warm_up(self) -> None:
        from serve_app.execution.warmup import run_warm_up, warm_up_worker

        try:
            run_warm_up(warm_up_worker, os.environ.get("JAX_COMPILATION_CACHE_DIR"))
        finally:
            self.warm.set()

    def ping(self, wait_s: float = 0.0) -> dict[str, Any]:
        if wait_s:
            self.warm.wait(wait_s)
        return {
            "node_id": self.node_id,
            "index": self.index,
            "pid": os.getpid(),
            "warm": self.warm.is_set(),
            "calls": self.calls,
            "compiles": COMPILES.compiles,
            "cache_loads": COMPILES.loaded,
            "uptime_s": time.time() - self.started,
        }

    @ray.method(concurrency_group="compute")
    def call(self, fn: Callable[..., Any] | str, *args: Any) -> tuple[Any, dict[str, Any]]:
        """Run ``fn(*args)`` (a function, or ``"module:function"``); result and its cost."""
        self.calls += 1
        return call_counted(_resolve(fn), *args)

    @ray.method(concurrency_group="driver")
    def drive(self, fn: Callable[..., Any] | str, *args: Any) -> Any:
        """Run a driver function (an asynchronous run that fans out on its own)."""
        self.calls += 1
        return _resolve(fn)(*args)


def _resolve(fn: Callable[..., Any] | str) -> Callable[..., Any]:
    if callable(fn):
        return fn
    module, _, name = fn.partition(":")
    resolved: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return resolved


_STATE: dict[str, Any] = {"actor_class": None, "pool": None}


def _actor_class() -> Any:
    if _STATE["actor_class"] is None:
        groups = {"compute": 1, "driver": 4}
        remote: Any = ray.remote
        _STATE["actor_class"] = remote(concurrency_groups=groups)(ComputeWorker)
    return _STATE["actor_class"]


# ------------------------------------------------------------------------------- the pool
@dataclass
class Worker:
    handle: Any
    node_id: str
    name: str


@dataclass
class WorkerPool:
    """The warm workers of the cluster, as this process sees them (refreshed every few s)."""

    workers_per_node: int | None = None
    warm_up: bool = True
    jax_cache_dir: str | None = None
    _workers: list[Worker] = field(default_factory=list)
    _checked_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next: int = 0

    def _nodes(self) -> list[dict[str, Any]]:
        return [n for n in ray.nodes() if n.get("Alive")]

    def _per_node(self, node: dict[str, Any]) -> int:
        if self.workers_per_node:
            return self.workers_per_node
        return max(1, int(node.get("Resources", {}).get("CPU", 1)))

    def _get_or_create(self, node_id: str, index: int) -> Worker:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        name = f"{NAME_PREFIX}-{node_id[:16]}-{index}"
        env = {"XLA_FLAGS": WORKER_XLA_FLAGS, **worker_env(), **cache_env(self.jax_cache_dir)}
        handle = (
            _actor_class()
            .options(
                name=name,
                namespace=NAMESPACE,
                lifetime="detached",
                get_if_exists=True,
                num_cpus=0,
                max_restarts=-1,
                max_task_retries=3,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
                runtime_env={"env_vars": env},
            )
            .remote(node_id, index, self.warm_up)
        )
        return Worker(handle, node_id, name)

    def refresh(self, force: bool = False) -> list[Worker]:
        """Workers on every alive node (creating missing ones)."""
        with self._lock:
            if not force and self._workers and time.monotonic() - self._checked_at < NODES_TTL_S:
                return list(self._workers)
            workers = []
            for node in self._nodes():
                node_id = str(node["NodeID"])
                workers += [self._get_or_create(node_id, i) for i in range(self._per_node(node))]
            self._workers = workers
            self._checked_at = time.monotonic()
            return list(workers)

    def workers(self) -> list[Worker]:
        return self.refresh()

    def forget(self, worker: Worker) -> None:
        """Stop handing out ``worker`` until the next refresh (its call failed)."""
        with self._lock:
            self._workers = [w for w in self._workers if w.name != worker.name]

    def pick(self, node_id: str | None = None) -> Worker:
        """The next worker, round robin (for a single call or a run's driver); with
        ``node_id``, one on that node when it has any."""
        workers = self.workers()
        if not workers:
            raise RuntimeError("no compute workers: no alive Ray node")
        local = [w for w in workers if node_id and w.node_id == node_id]
        workers = local or workers
        with self._lock:
            self._next = (self._next + 1) % len(workers)
            return workers[self._next]

    def status(self, wait_s: float = 0.0) -> list[dict[str, Any]]:
        """Each worker's ping (``warm``, pid, calls, compiles); unreachable ones say why."""
        out = []
        workers = self.workers()
        refs = [w.handle.ping.remote(wait_s) for w in workers]
        for worker, ref in zip(workers, refs, strict=True):
            try:
                out.append({"name": worker.name, **ray.get(ref, timeout=PING_TIMEOUT_S + wait_s)})
            except Exception as exc:
                out.append({"name": worker.name, "node_id": worker.node_id, "error": str(exc)})
        return out


_POOL_LOCK = threading.Lock()


def configure(settings: Any) -> WorkerPool:
    """Set this process's pool from the settings (replicas, ``squall up``, jobs, the CLI):
    workers per node, warm-up, the shared compilation cache (also used by this process)."""
    configure_cache(settings.jax_cache_dir)
    with _POOL_LOCK:
        _STATE["pool"] = WorkerPool(
            settings.compute_workers_per_node, settings.warm_up, settings.jax_cache_dir
        )
        current: WorkerPool = _STATE["pool"]
        return current


def pool() -> WorkerPool:
    """This process's view of the warm workers (from :func:`configure`, else the settings
    of the environment)."""
    with _POOL_LOCK:
        current: WorkerPool | None = _STATE["pool"]
    if current is not None:
        return current
    from serve_app.settings import get_settings

    return configure(get_settings())


def reset_pool() -> None:
    """Forget the pool (a new Ray session, tests)."""
    with _POOL_LOCK:
        _STATE["pool"] = None


def stop_workers() -> int:
    """Kill every compute worker of the cluster (``squall up`` on its way out); how many."""
    from ray.util import list_named_actors

    killed = 0
    for entry in list_named_actors(all_namespaces=True):
        name, namespace = str(entry["name"]), str(entry["namespace"])
        if namespace == NAMESPACE and name.startswith(NAME_PREFIX):
            try:
                ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
                killed += 1
            except ValueError:  # gone meanwhile
                pass
    reset_pool()
    return killed
