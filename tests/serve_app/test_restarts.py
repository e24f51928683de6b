"""Restarts survive what earlier runs left: real ``squall up`` processes on free ports.

Two instances (A and B, different port settings) start together and both answer ``/ready``.
A is then stopped each of the three ways (SIGINT to its process group, SIGTERM, SIGKILL):
after each, no process of it and no port of it remain, and it starts again on the same ports
at once. Then its Ray cluster is taken away under it (``ray stop --force`` under ``CI=true``
or ``SQUALL_TEST_REAL_RAY_STOP=1``, since that ends every Ray on the machine; otherwise only
A's Ray processes are killed, as ``ray stop --force`` kills them): A exits non-zero with one
line saying so, and a HAProxy left holding its ports is ended by the next start, which
answers. B answers throughout. A port held by a foreign listener is refused before Ray
starts, naming the port and the setting.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from serve_app.instance import haproxy_binary
from tests.serve_app.live_server import SQUALL, free_port, port_open

pytestmark = pytest.mark.ray

if haproxy_binary(os.environ) is None:
    pytest.skip("no HAProxy binary (Serve's HA-proxy mode needs one)", allow_module_level=True)

REAL_RAY_STOP = os.environ.get("CI") == "true" or os.environ.get("SQUALL_TEST_REAL_RAY_STOP") == "1"
READY_S = 240.0


def _free_block(size: int) -> int:
    """The first port of ``size`` consecutive free ports below Linux's ephemeral range."""
    for _ in range(200):
        low = random.randrange(20_000, 32_000 - size)
        if all(not port_open(p) for p in range(low, low + size)):
            return low
    raise RuntimeError("no free block of ports")


@dataclass
class Instance:
    """One ``squall up`` configuration (fixed ports, its own folder) and its current process."""

    name: str
    folder: Path
    env: dict[str, str]
    ports: list[int]
    proc: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.env['SQUALL_API_PORT']}"

    @property
    def log(self) -> str:
        return self.logs[-1].read_text(errors="replace") if self.logs else ""

    def start(self) -> None:
        path = self.folder / f"up-{len(self.logs)}.log"
        self.logs.append(path)
        with path.open("wb") as out:
            self.proc = subprocess.Popen(
                [*SQUALL, "up"],
                env=self.env,
                cwd=self.folder,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout_s: float = READY_S) -> float:
        """Seconds until ``/ready`` answers 200."""
        assert self.proc is not None
        t0 = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/ready", timeout=2).status_code == 200:
                    return time.monotonic() - t0
            if time.monotonic() - t0 > timeout_s:
                raise AssertionError(f"{self.name} not ready after {timeout_s}s:\n{self.log}")
            time.sleep(0.25)

    def family(self) -> list[psutil.Process]:
        """The process and everything below it, and the HAProxy Serve started for it."""
        assert self.proc is not None
        top = psutil.Process(self.proc.pid)
        return [top, *top.children(recursive=True)]

    def haproxy(self) -> list[psutil.Process]:
        return [p for p in self.family() if p.name() == "haproxy"]


def _instance(tmp: Path, name: str) -> Instance:
    folder = tmp / name
    folder.mkdir()
    singles = [free_port() for _ in range(6)]
    low = _free_block(20)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SQUALL_", "RAY_"))}
    env.update(
        SQUALL_DATABASE_URL=f"sqlite:///{folder / 'squall.db'}",
        SQUALL_API_HOST="127.0.0.1",
        SQUALL_API_PORT=str(singles[0]),
        SQUALL_DASHBOARD_PORT=str(singles[1]),
        SQUALL_HAPROXY_STATS_PORT=str(singles[2]),
        SQUALL_HAPROXY_METRICS_PORT=str(singles[3]),
        SQUALL_SERVE_FALLBACK_HTTP_PORT=str(singles[4]),
        SQUALL_SERVE_FALLBACK_GRPC_PORT=str(singles[5]),
        SQUALL_REPLICA_HTTP_PORTS=f"{low}-{low + 9}",
        SQUALL_REPLICA_GRPC_PORTS=f"{low + 10}-{low + 19}",
        SQUALL_INGEST_ENABLED="false",
        SQUALL_WARM_UP="false",
        SQUALL_SERVE_REPLICAS="1",
        SQUALL_COMPUTE_WORKERS_PER_NODE="1",
        SQUALL_COINS="BTC",
        SQUALL_INTERVALS="1d",
        SQUALL_CLUSTER_CHECK_S="1",
        SQUALL_JAX_CACHE_DIR=os.environ.get("SQUALL_JAX_CACHE_DIR", str(folder / "jax")),
        SQUALL_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return Instance(name, folder, env, [*singles, low])


def _gone(procs: list[psutil.Process], ports: list[int], timeout_s: float) -> tuple[list, list]:
    """Wait until none of ``procs`` runs and no port in ``ports`` listens; returns what is left."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = []
        for p in procs:
            with contextlib.suppress(psutil.Error):
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(p)
        busy = [port for port in ports if port_open(port)]
        if (not left and not busy) or time.monotonic() > deadline:
            return left, busy
        time.sleep(0.25)


def _kill(procs: list[psutil.Process]) -> None:
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()


def _stop(inst: Instance, how: str) -> list[psutil.Process]:
    """Stop ``inst`` one way; returns the processes it had (to check they are gone)."""
    assert inst.proc is not None
    family = inst.family()
    if how == "SIGINT":  # Ctrl-C in a terminal: the whole foreground process group
        os.killpg(inst.proc.pid, signal.SIGINT)
    elif how == "SIGTERM":
        inst.proc.send_signal(signal.SIGTERM)
    else:
        inst.proc.kill()
    try:
        inst.proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        _kill(family)
        pytest.fail(f"{inst.name} did not end within 120 s of {how}:\n{inst.log[-3000:]}")
    return family


def _assert_nothing_left(inst: Instance, family: list[psutil.Process], how: str) -> None:
    left, busy = _gone(family, inst.ports[:-1], timeout_s=30)
    _kill(left)
    assert not left and not busy, (
        f"after {how}: processes {[p.pid for p in left]} / ports {busy} left:\n{inst.log[-3000:]}"
    )


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Instance, Instance]]:
    """A and B, started together on different ports; at the end both are stopped (Ctrl-C)
    and must leave nothing behind."""
    tmp = tmp_path_factory.mktemp("restarts")
    a, b = _instance(tmp, "a"), _instance(tmp, "b")
    for inst in (a, b):
        inst.start()
    try:
        yield a, b
    finally:
        families = []
        for inst in (a, b):
            if inst.proc is not None and inst.proc.poll() is None:
                with contextlib.suppress(psutil.Error):
                    families.append((inst, _stop(inst, "SIGINT")))
        for inst, family in families:
            _assert_nothing_left(inst, family, "the final Ctrl-C")


def test_foreign_listener_on_a_port_is_refused_before_ray_starts(tmp_path: Path) -> None:
    inst = _instance(tmp_path, "c")
    with socket.socket() as foreign:
        foreign.bind(("0.0.0.0", 0))
        foreign.listen()
        port = foreign.getsockname()[1]
        inst.env["SQUALL_HAPROXY_STATS_PORT"] = str(port)
        done = subprocess.run(  # noqa: PLW1510 (asserted)
            [*SQUALL, "up"], env=inst.env, cwd=inst.folder, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr + done.stdout
    assert str(port) in lines[0] and "SQUALL_HAPROXY_STATS_PORT" in lines[0]
    assert "Started a local Ray" not in done.stderr + done.stdout  # refused before Ray
    assert not (inst.folder / "squall.db").exists()  # and before touching the database


def test_two_instances_with_other_ports_answer_side_by_side(
    pair: tuple[Instance, Instance],
) -> None:
    a, b = pair
    a.wait_ready()
    b.wait_ready()
    for inst in (a, b):
        assert httpx.get(f"{inst.base}/ready", timeout=10).status_code == 200
    assert {h.pid for h in a.haproxy()}.isdisjoint(h.pid for h in b.haproxy())


@pytest.mark.timeout(900)
def test_each_stop_leaves_nothing_and_a_restart_answers_at_once(
    pair: tuple[Instance, Instance],
) -> None:
    a, b = pair
    a.wait_ready()
    for how in ("SIGINT", "SIGTERM", "SIGKILL"):
        family = _stop(a, how)
        assert a.proc is not None
        if how != "SIGKILL":
            assert a.proc.returncode == 0, f"{how}: status {a.proc.returncode}\n{a.log}"
        _assert_nothing_left(a, family, how)
        a.start()  # the same ports, at once
        a.wait_ready()
    assert httpx.get(f"{b.base}/ready", timeout=10).status_code == 200  # B never noticed


@pytest.mark.timeout(600)
def test_ray_stop_under_a_running_platform_then_a_start_ends_what_it_left(
    pair: tuple[Instance, Instance],
) -> None:
    a, b = pair
    a.wait_ready()
    assert a.proc is not None
    haproxies = a.haproxy()
    assert haproxies, "no HAProxy under squall up"
    binary = haproxies[0].exe()
    if REAL_RAY_STOP:
        ray = Path(sys.executable).parent / "ray"
        subprocess.run([str(ray), "stop", "--force"], timeout=120, check=False)
    else:  # what `ray stop --force` ends, for this instance only: Ray's processes, not HAProxy
        _kill([p for p in a.family()[1:] if p.name() != "haproxy"])
    try:
        code = a.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        _kill(a.family())
        pytest.fail(f"squall up did not notice its cluster was gone:\n{a.log[-3000:]}")
    assert code != 0
    reasons = [line for line in a.log.splitlines() if "Ray cluster is gone" in line]
    assert len(reasons) == 1, a.log[-3000:]
    left, _ = _gone(haproxies, [], timeout_s=10)
    assert not left, "HAProxy outlived its parent"

    # what an earlier run without that left behind: its HAProxy, holding the API port
    configs = sorted((a.folder / "var").rglob("haproxy.cfg"))
    assert configs, "no HAProxy config in the instance's folder"
    stale = subprocess.Popen(
        [binary, "-db", "-f", str(configs[-1])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not port_open(int(a.env["SQUALL_API_PORT"])) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert port_open(int(a.env["SQUALL_API_PORT"])), "the stand-in HAProxy did not bind"
        a.start()
        a.wait_ready()
        assert stale.wait(timeout=10) is not None  # ended by the start
        said = [line for line in a.log.splitlines() if f"HAProxy pid {stale.pid}" in line]
        assert len(said) == 1, a.log[-3000:]
    finally:
        if stale.poll() is None:
            stale.kill()
            stale.wait()
    if not REAL_RAY_STOP:  # a real `ray stop --force` ended B's cluster as well
        assert httpx.get(f"{b.base}/ready", timeout=10).status_code == 200
