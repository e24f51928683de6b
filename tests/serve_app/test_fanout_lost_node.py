"""The fan-out when a node is lost (no Ray runtime needed: ``ray``'s calls are stood in for):
every call outstanding on the lost node's worker goes to a live worker, the results keep
their order, and the retries are counted; with no live worker left it raises."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest

ray = pytest.importorskip("ray")
from ray.exceptions import ActorDiedError, ActorUnschedulableError  # noqa: E402

from serve_app.execution import fanout  # noqa: E402
from serve_app.execution.workers import Worker  # noqa: E402


@dataclass
class FakeCluster:
    dead: set[str] = field(default_factory=set)
    error: type[Exception] = ActorUnschedulableError
    refs: dict[int, tuple[str, Any]] = field(default_factory=dict)
    ids: Any = field(default_factory=itertools.count)

    def worker(self, name: str, node: str) -> Worker:
        cluster = self

        class Call:
            def remote(self, fn: Any, shared: Any, item: Any) -> int:
                ref = next(cluster.ids)
                cluster.refs[ref] = (name, fn(shared, item))
                return ref

        class Handle:
            call = Call()

        return Worker(Handle(), node, name)

    def get(self, ref: int) -> Any:
        name, result = self.refs[ref]
        if name in self.dead:
            raise self.error() if self.error is ActorDiedError else self.error("node gone")
        return result, {"pid": hash(name) % 1000, "compiles": 0, "cache_loads": 0}


class FakePool:
    def __init__(self, workers: list[Worker]) -> None:
        self._workers = workers
        self.forgotten: list[str] = []

    def workers(self) -> list[Worker]:
        return list(self._workers)

    def forget(self, worker: Worker) -> None:
        self.forgotten.append(worker.name)


def _install(monkeypatch: pytest.MonkeyPatch, cluster: FakeCluster, workers: list[Worker]) -> Any:
    pool = FakePool(workers)
    monkeypatch.setattr(fanout, "pool", lambda: pool)
    monkeypatch.setattr(ray, "put", lambda value: value)
    monkeypatch.setattr(ray, "get", cluster.get)
    monkeypatch.setattr(ray, "cancel", lambda ref: None)
    monkeypatch.setattr(ray, "wait", lambda refs, num_returns=1, timeout=None: (refs[:1], refs[1:]))
    return pool


def _square(shared: int, item: int) -> int:
    return shared * item * item


@pytest.mark.parametrize("error", [ActorUnschedulableError, ActorDiedError])
def test_every_call_on_a_lost_node_runs_again_on_a_live_worker(
    monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    cluster = FakeCluster(dead={"w-worker"}, error=error)
    workers = [cluster.worker("w-head", "head"), cluster.worker("w-worker", "worker")]
    pool = _install(monkeypatch, cluster, workers)
    results, how = fanout.fan_out(_square, list(range(8)), 2, use_ray=True, per_worker=2)
    assert results == [2 * i * i for i in range(8)]
    assert how["retried"] == 2  # both calls that were outstanding on the lost worker
    assert how["nodes"] == ["head"]
    assert pool.forgotten == ["w-worker", "w-worker"]


def test_with_no_live_worker_left_it_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = FakeCluster(dead={"w-a", "w-b"})
    _install(monkeypatch, cluster, [cluster.worker("w-a", "a"), cluster.worker("w-b", "b")])
    with pytest.raises(ActorUnschedulableError):
        fanout.fan_out(_square, list(range(4)), 1, use_ray=True)
