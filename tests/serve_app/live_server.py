"""Real servers for the dashboard and client tests: the app under uvicorn on a free loopback
port (in a thread), and ``squall up`` itself as a subprocess (Ray Serve over HTTP), stopped
with SIGINT like a person's Ctrl-C and checked to leave no process and no port behind."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from serve_app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SQUALL = [sys.executable, "-m", "serve_app.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def uvicorn_app(settings: Settings) -> Iterator[str]:
    """The FastAPI app under uvicorn on a free port; yields its origin."""
    import uvicorn

    from serve_app.api import create_app

    port = free_port()
    app = create_app(settings, configure_logs=False, background=False)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def import_files(database_url: str, files: list[Path]) -> None:
    """``squall import FILE ...`` into ``database_url`` (the real command, as a user runs it)."""
    env = {**os.environ, "SQUALL_DATABASE_URL": database_url}
    done = subprocess.run(  # noqa: PLW1510 (the return code is asserted)
        [*SQUALL, "import", *map(str, files), "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr + done.stdout


@dataclass
class Platform:
    """A running ``squall up``: its API origin, its process and its log file."""

    base_url: str
    process: subprocess.Popen[bytes]
    log: Path
    ports: list[int]
    database_url: str

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def _serve_env(folder: Path, database_url: str, api_port: int) -> tuple[dict[str, str], list[int]]:
    """Settings of a small platform on free ports (Ray Serve's HAProxy ports included, so
    that two test runs on one machine never meet)."""
    ports = [free_port() for _ in range(4)]
    low = 45_000 + (api_port % 100) * 50  # a block of replica ports of our own
    env = {
        **os.environ,
        "SQUALL_DATABASE_URL": database_url,
        "SQUALL_API_HOST": "127.0.0.1",
        "SQUALL_API_PORT": str(api_port),
        "SQUALL_DASHBOARD_PORT": str(ports[0]),
        "SQUALL_INGEST_ENABLED": "false",
        "SQUALL_COINS": "BTC,ETH",
        "SQUALL_INTERVALS": "1d",
        "SQUALL_SERVE_REPLICAS": "1",
        "SQUALL_MAX_CANDLES_PER_REQUEST": "1000",  # below the client's page: it must adapt
        "SQUALL_COMPUTE_WORKERS_PER_NODE": "1",
        "SQUALL_JAX_CACHE_DIR": str(folder / "jax-cache"),
        "SQUALL_LOG_LEVEL": "WARNING",
        "RAY_SERVE_HAPROXY_STATS_PORT": str(ports[1]),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(ports[2]),
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(ports[3]),
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(low),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(low + 49),
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(low + 5_000),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(low + 5_049),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("RAY_ADDRESS", None)
    env.pop("SQUALL_RAY_ADDRESS", None)
    return env, [api_port, *ports]


@contextlib.contextmanager
def squall_up(
    folder: Path,
    database_url: str,
    *,
    ready_s: float = 240,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Platform]:
    """``squall up`` in its own process group; yields once ``/ready`` answers 200. On exit:
    SIGINT (Ctrl-C), then it must stop by itself; whatever is left is killed and the test
    fails, and every port it was given must be free again. ``extra_env`` overrides settings
    (the screenshot script turns the synthetic ingestion on)."""
    import psutil

    api_port = free_port()
    env, ports = _serve_env(folder, database_url, api_port)
    env.update(extra_env or {})
    log = folder / "squall-up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*SQUALL, "up"],
            env=env,
            cwd=folder,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{api_port}"
    platform = Platform(base, proc, log, ports, database_url)
    try:
        deadline = time.monotonic() + ready_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"squall up exited ({proc.returncode}):\n{platform.text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"squall up not ready after {ready_s}s:\n{platform.text()}")
            time.sleep(0.5)
        yield platform
    finally:
        family = _family(psutil, proc.pid)
        leftovers = _stop(psutil, proc, family)
        busy = [p for p in ports if port_open(p)]
        if leftovers or busy:
            raise AssertionError(
                f"squall up left processes {leftovers} / ports {busy} behind:\n"
                + platform.text()[-3000:]
            )


def _family(psutil: object, pid: int) -> list[object]:
    try:
        parent = psutil.Process(pid)  # type: ignore[attr-defined]
        return [parent, *parent.children(recursive=True)]
    except Exception:
        return []


def _stop(psutil: object, proc: subprocess.Popen[bytes], family: list[object]) -> list[str]:
    """SIGINT, wait for the platform to stop; returns what had to be killed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=90)
    deadline = time.monotonic() + 20  # Ray's own processes end shortly after the driver
    alive = [p for p in family if p.is_running()]  # type: ignore[attr-defined]
    while alive and time.monotonic() < deadline:
        time.sleep(0.5)
        alive = [p for p in alive if p.is_running() and p.status() != "zombie"]  # type: ignore[attr-defined]
    left = []
    for p in alive:
        with contextlib.suppress(Exception):
            left.append(" ".join(p.cmdline()[:3]))  # type: ignore[attr-defined]
            p.kill()  # type: ignore[attr-defined]
    if proc.poll() is None:
        proc.kill()
        left.append("squall up (did not stop on SIGINT)")
    proc.wait(timeout=10)
    return left
