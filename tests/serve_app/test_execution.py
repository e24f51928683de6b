"""The execution layer on a real local Ray runtime: warm workers, the run lifecycle.

* the same bits on 1, 2, 4 and 8 calls, on the workers and in-process;
* two identical simulations in a row reuse the warm workers: the second one starts no new
  worker process and compiles nothing (its ``execution`` block says so, not a timing);
* a simulation whose worker is killed is marked ``failed`` within the heartbeat timeout;
* cancelling a running walk-forward ends its outstanding calls and records ``cancelled``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from compute.simulation import paths as simulate
from compute.simulation import shocks
from serve_app.api import create_app
from serve_app.execution import chunks, workers
from serve_app.settings import Settings
from storage.migrate import upgrade
from tests.compute.simulation.test_simulate import _job
from tests.serve_app.factories import HOUR, candle, seed

pytestmark = pytest.mark.ray
TIMEOUT_S = 3.0  # the heartbeat timeout these tests run with


DASHBOARD: dict[str, str] = {}


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    from tests.serve_app.test_serve_http import _free_port

    # the dashboard serves Ray's state API, which the cancel test reads the tasks from
    ctx = ray.init(
        num_cpus=2, include_dashboard=True, dashboard_port=_free_port(), log_to_driver=False
    )
    DASHBOARD["url"] = f"http://{ctx.dashboard_url}"  # this cluster's state API, by address
    workers.reset_pool()
    yield
    workers.stop_workers()
    ray.shutdown()


def _walk(n: int, coin: str = "BTC", seed_: int = 3) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed_)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    t0 = 1_600_000_000 // HOUR * HOUR
    rows = []
    for i, c in enumerate(close):
        o = close[i - 1] if i else c
        rows.append(
            candle(
                coin,
                "1h",
                t0 + i * HOUR,
                i,
                open=o,
                close=c,
                high=max(o, c) * 1.002,
                low=min(o, c) * 0.998,
            )
        )
    return rows


@pytest.fixture(scope="module")
def app_client(ray_runtime: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path_factory.mktemp('exec') / 'squall.db'}"
    upgrade(url)
    seed(url, _walk(20_000))
    settings = Settings(
        database_url=url,
        coins=["BTC"],
        intervals=["1h"],
        ingest_enabled=False,
        compute_workers_per_node=2,
        run_heartbeat_s=0.5,
        run_heartbeat_timeout_s=TIMEOUT_S,
    )
    with TestClient(create_app(settings, configure_logs=False)) as client:
        yield client


def test_same_bits_on_any_number_of_calls_and_in_process(ray_runtime: None) -> None:
    rng = np.random.default_rng(4)
    spec = shocks.ShockSpec(gap_size=-0.1, gap_prob=0.01, leverage=2, maintenance_margin=0.1)
    job = _job(rng.standard_t(3, 500) * 0.02, 9000, 50, spec=spec)
    assert job.n_chunks == 9  # 1024-path chunks, the last one partial
    outs = []
    for n in (1, 2, 4, 8, 4):
        acc, how = chunks.run(job, tasks=n, use_ray=True)
        assert how["ray"] is True and how["tasks"] == n
        outs.append(json.dumps(simulate.finalize(acc, job.layout)))
    local, how = chunks.run(job, use_ray=False)
    assert how["ray"] is False
    whole = simulate.run_chunks(job, 0, job.n_chunks)
    assert len({*outs, json.dumps(simulate.finalize(local, job.layout))}) == 1
    assert outs[0] == json.dumps(simulate.finalize(whole, job.layout))


SIM = {
    "backtest": {"coin": "BTC", "interval": "1h", "strategy": "ema_cross"},
    "horizon": 365,
    "paths": 300_000,  # 110 M path-steps: spread over the warm workers
    "seed": 9,
}


def test_identical_simulations_reuse_warm_workers_without_compiling(
    app_client: TestClient,
) -> None:
    first = app_client.post("/risk/simulate", json=SIM)
    assert first.status_code == 200, first.text
    cold = first.json()["execution"]
    assert cold["ray"] is True and cold["where"] == "warm workers"
    second = app_client.post("/risk/simulate", json=SIM).json()
    warm = second["execution"]
    assert warm["compiles"] == 0 and warm["cache_loads"] == 0 and warm["warm"] is True
    # no new worker process: the calls ran in the workers that already existed
    alive = {w["pid"] for w in workers.pool().status() if "pid" in w}
    assert set(warm["workers"]) <= alive and set(warm["workers"]) <= set(cold["workers"]) | alive
    assert second["result"] == first.json()["result"]  # and the same bits


def _wait(client: TestClient, run_id: str, done: Any, limit_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    while True:
        run = client.get(f"/runs/{run_id}").json()
        if done(run):
            return run  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, run
        time.sleep(0.1)


def test_a_killed_worker_marks_its_run_failed_within_the_timeout(app_client: TestClient) -> None:
    big = {**SIM, "paths": 4_000_000, "mode": "async"}  # several seconds of paths
    queued = app_client.post("/risk/simulate", json=big)
    assert queued.status_code == 202, queued.text
    run_id = queued.json()["run_id"]
    running = _wait(app_client, run_id, lambda r: r["status"] == "running", 60)
    pid = int(running["worker"].rsplit("pid", 1)[1])
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)  # the worker driving the run dies mid-run
    killed_at = time.monotonic()
    failed = _wait(app_client, run_id, lambda r: r["status"] != "running", TIMEOUT_S + 10)
    assert failed["status"] == "failed" and "no heartbeat" in failed["error"]
    # within the timeout plus one round of the reaper (timeout / 3) and a beat
    assert time.monotonic() - killed_at < TIMEOUT_S * 4 / 3 + 3


@pytest.mark.slow
def test_a_chunk_whose_worker_is_killed_is_retried_to_the_same_bits(
    app_client: TestClient,
) -> None:
    """SIGKILL a warm worker while it holds simulation chunks: the calls are retried (by Ray
    on the restarted actor, or by the fan-out on another worker) and the merged result is
    bit-identical to an undisturbed run of the same job."""
    rng = np.random.default_rng(12)
    job = _job(rng.standard_t(3, 2000) * 0.02, 400_000, 365)
    undisturbed, _ = chunks.run(job, tasks=16, use_ray=True)
    before = sorted(w["pid"] for w in workers.pool().status() if "pid" in w)
    assert len(before) == 2
    victim = before[0]
    killed: list[int] = []

    def kill_once(done: int, total: int) -> None:
        if not killed and done < total:  # chunks are still queued and in flight
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    disturbed, how = chunks.run(job, tasks=16, use_ray=True, on_progress=kill_once)
    assert killed == [victim]
    with pytest.raises(ProcessLookupError):
        os.kill(victim, 0)  # it is gone
    restarted = set(how["workers"]) - set(before)
    assert how["retried"] >= 1 or restarted, how  # some chunk really ran a second time
    same = json.dumps(simulate.finalize(disturbed, job.layout))
    assert same == json.dumps(simulate.finalize(undisturbed, job.layout))


def test_cancelling_a_walkforward_ends_its_ray_calls(app_client: TestClient) -> None:
    from ray.util.state import list_tasks

    body = {
        "coin": "BTC", "interval": "1h", "strategy": "ema_cross", "mode": "async",
        "grid": {"fast": list(range(3, 23)), "slow": [50, 100, 150, 200, 250]},
        "train_bars": 2000, "test_bars": 300,
    }  # fmt: skip
    queued = app_client.post("/backtest/walkforward", json=body)
    assert queued.status_code == 202, queued.text
    run_id = queued.json()["run_id"]
    _wait(app_client, run_id, lambda r: (r["progress"] or {}).get("done", 0) >= 1, 120)
    cancel = app_client.delete(f"/runs/{run_id}")
    assert cancel.status_code == 200 and cancel.json()["cancel_requested"] is True
    done = _wait(app_client, run_id, lambda r: r["status"] != "running", 30)
    assert done["status"] == "cancelled" and done["progress"]["done"] < done["progress"]["total"]
    deadline = time.monotonic() + 15
    while True:  # the fold calls it had queued or running are gone
        busy = [
            t
            for t in list_tasks(
                address=DASHBOARD["url"], filters=[("state", "!=", "FINISHED")], limit=1000
            )
            if "ComputeWorker.call" in (t.name or "") and t.state not in ("FAILED",)
        ]
        if not busy:
            break
        assert time.monotonic() < deadline, busy
        time.sleep(0.5)
    again = app_client.delete(f"/runs/{run_id}")
    assert again.status_code == 409 and again.json()["error"] == "run_finished"
