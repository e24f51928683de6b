"""A real two-node Ray cluster on this host, with Postgres: ``make cluster-check``.

What it does, in order (every step prints what it saw):

1. creates a database of its own on ``SQUALL_CLUSTER_POSTGRES_URL`` (default: the local
   Postgres, ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``) and migrates it;
2. starts a head (``ray start --head``, custom resource ``squall_head``) and a worker node
   (``ray start --address``, custom resource ``squall_worker``) as separate processes, each
   on ports of its own and in a temp dir of its own, so it never meets another Ray on the host
   (the same topology as ``cluster-local.yaml`` on two hosts);
3. deploys the API with ``serve deploy`` (``serve_config.yaml`` with the database, ports and
   the replicas pinned to the head by its custom resource); the replicas start the ingestion
   supervisor, which fills the configured series in Postgres;
4. submits a sweep with ``squall sweep submit --wait`` (a Ray job);
5. runs a 1M-path ``/risk/simulate`` on both nodes, then the same request again and kills the
   worker node mid-run, then once more on the head alone, and the same request in one process
   without Ray: every result must be bit-identical; the per-node placement of the chunks is
   read from Ray's state API (``ray.util.state.list_tasks``, with node ids);
6. checks Postgres afterwards: no candle off its interval's grid, no OHLC violation, no hole
   inside a series, no run left queued or running, every run of this check succeeded.

Every process it starts is stopped on the way out (also on failure or Ctrl-C): each node's
``ray start --block`` and everything under it, then anything left that names its temp dir.
Exit status 0 when every check passed. ``--keep-db`` keeps the database for a look.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
COINS = ["BTC", "ETH"]
INTERVALS = ["1h", "1d"]
STEP = {"1h": 3600, "1d": 86400}
BACKFILL_DAYS = 40
T0 = time.monotonic()
FAILURES: list[str] = []


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def check(ok: bool, what: str) -> None:
    say(("PASS " if ok else "FAIL ") + what)
    if not ok:
        FAILURES.append(what)


# ----------------------------------------------------------------------------------- ports
def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(n: int, span: int = 0) -> list[int]:
    """``n`` free ports (and, with ``span``, a free range of ``span`` ports after them)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 29000 - n - span)
        wanted = range(base, base + n + span)
        if all(_free(p) for p in wanted):
            return list(wanted)
    raise RuntimeError("no free port range found")


# ------------------------------------------------------------------------------- processes
class Node:
    """One ``ray start --block`` process (its own session) and everything it started."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        out = log.open("w")
        self.proc = subprocess.Popen(
            [str(BIN / "ray"), "start", "--block", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self, sig: int = signal.SIGKILL) -> int:
        procs = self.tree()
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(sig)
        return len(procs)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(15)
        self.kill(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


def kill_leftovers(marker: str) -> int:
    """Kill every process of ours whose command line names ``marker`` (our temp dir)."""
    me = os.getpid()
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        if p.info["pid"] != me and marker in cmd:
            found.append(p)
    for p in found:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(found, timeout=5)
    return len(found)


def run(cmd: list[str], env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run(
        cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


# -------------------------------------------------------------------------------- database
@contextlib.contextmanager
def database(base_url: str, keep: bool) -> Iterator[str]:
    name = f"squall_cluster_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(base_url).set(database=name).render_as_string(hide_password=False)
    say(f"database: {make_url(url).render_as_string(hide_password=True)}")
    try:
        yield url
    finally:
        if keep:
            say(f"kept database {name}")
        else:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# ----------------------------------------------------------------------------- Ray's state
def nodes(dashboard: str) -> list[dict[str, Any]]:
    from ray.util.state import list_nodes

    return [n.__dict__ if hasattr(n, "__dict__") else dict(n) for n in list_nodes(dashboard)]


def compute_calls(dashboard: str) -> dict[str, dict[str, Any]]:
    """Every ``ComputeWorker.call`` task attempt Ray recorded: task id -> state, node."""
    from ray.util.state import list_tasks

    tasks = list_tasks(
        dashboard,
        filters=[("name", "=", "ComputeWorker.call")],
        limit=10_000,
        raise_on_missing_output=False,
    )
    out = {}
    for task in tasks:
        t = task.__dict__ if hasattr(task, "__dict__") else dict(task)
        out[f"{t['task_id']}:{t.get('attempt_number', 0)}"] = t
    return out


def placement(before: dict[str, Any], after: dict[str, Any], names: dict[str, str]) -> Counter:
    new = [t for k, t in after.items() if k not in before]
    return Counter((names.get(t.get("node_id") or "", "?"), t.get("state")) for t in new)


# ------------------------------------------------------------------------------- the check
def sim_request(tasks: int) -> dict[str, Any]:
    rng = random.Random(11)
    returns = [round(rng.gauss(0.0004, 0.02), 6) for _ in range(730)]
    return {
        "returns": returns,
        "periods_per_year": 365,
        "horizon": 3650,
        "paths": 1_000_000,
        "seed": 7,
        "mode": "async",
        "tasks": tasks,
    }


def result_of(body: dict[str, Any]) -> str:
    return json.dumps(body.get("result"), sort_keys=True)


def simulate(
    api: httpx.Client, req: dict[str, Any], kill: Node | None = None, at: float = 0.15
) -> dict[str, Any]:
    started = time.monotonic()
    sub = api.post("/risk/simulate", json=req)
    sub.raise_for_status()
    run_id = sub.json()["run_id"]
    killed = False
    while True:
        body = api.get(f"/risk/simulations/{run_id}").json()
        prog = body.get("progress") or {}
        frac = (prog.get("done") or 0) / max(1, prog.get("total") or 1)
        if kill is not None and not killed and frac >= at:
            n = kill.kill()
            killed = True
            say(f"killed the worker node at {frac:.0%} of the paths ({n} processes, SIGKILL)")
        if body["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.1)
    body["wall_s"] = time.monotonic() - started
    body["killed_at_progress"] = killed
    return body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-db", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    base_pg = os.environ.get("SQUALL_CLUSTER_POSTGRES_URL", DEFAULT_PG)
    tmp = Path(tempfile.mkdtemp(prefix="sqc-", dir="/tmp"))
    temp_dir = tmp / "ray"
    started: list[Node] = []
    interrupted = {"sig": None}

    def on_signal(signum: int, _frame: Any) -> None:
        interrupted["sig"] = signum
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        with database(base_pg, args.keep_db) as db_url:
            return _check(db_url, tmp, temp_dir, started)
    except BaseException:
        for node in started:
            tail = node.log.read_text(errors="replace").splitlines()[-25:]
            say(f"{node.name}'s log (last lines):\n  " + "\n  ".join(tail))
        raise
    finally:
        for node in reversed(started):
            node.stop()
        left = kill_leftovers(str(tmp))
        say(f"cleanup: stopped {len(started)} node(s), {left} leftover process(es) killed")
        shutil.rmtree(tmp, ignore_errors=True)


def _check(db_url: str, tmp: Path, temp_dir: Path, started: list[Node]) -> int:
    gcs, dash, client, http_port = free_ports(4)
    head_ports = free_ports(7, span=100)
    worker_ports = free_ports(7, span=100)
    dashboard = f"http://127.0.0.1:{dash}"
    # Token authentication, as on a real cluster, with a token of this check's own: every node
    # and every client (serve, jobs, the state API here) reads it from RAY_AUTH_TOKEN_PATH.
    token = tmp / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    os.environ.update(auth)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SQUALL_", "VIRTUAL"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        SQUALL_DATABASE_URL=db_url,
        SQUALL_RAY_ADDRESS=f"127.0.0.1:{gcs}",
        SQUALL_RAY_JOBS_ADDRESS=dashboard,
        SQUALL_COINS=",".join(COINS),
        SQUALL_INTERVALS=",".join(INTERVALS),
        SQUALL_BACKFILL_DAYS=str(BACKFILL_DAYS),
        SQUALL_COMPUTE_WORKERS_PER_NODE="1",
        SQUALL_FEATURES_ENABLED="false",
        SQUALL_JAX_CACHE_DIR=str(tmp / "jax-cache"),
        **auth,
        RAY_DISABLE_USAGE_STATS="1",
        # a lost node is noticed in ~3 s instead of ~30 s
        RAY_health_check_period_ms="1000",
        RAY_health_check_timeout_ms="1000",
        RAY_health_check_failure_threshold="3",
    )
    say(f"migrating: {run([str(BIN / 'squall'), 'db', 'upgrade'], env).strip()[-80:]}")

    def node_args(ports: list[int], cpus: int, resource: str) -> list[str]:
        (nm, om, agent, agent_grpc, rt_env, metrics, wmin), wmax = ports[:7], ports[-1]
        return [
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={cpus}",
            f"--resources={json.dumps({resource: 1})}",
            f"--node-manager-port={nm}",
            f"--object-manager-port={om}",
            f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={rt_env}",
            f"--metrics-export-port={metrics}",
            f"--min-worker-port={wmin}",
            f"--max-worker-port={wmax}",
            f"--temp-dir={temp_dir}",
            "--object-store-memory=500000000",
            "--disable-usage-stats",
        ]

    t = time.monotonic()
    started.append(
        Node(
            "head",
            [
                "--head",
                f"--port={gcs}",
                f"--dashboard-port={dash}",
                "--dashboard-host=127.0.0.1",
                f"--ray-client-server-port={client}",
                *node_args(head_ports, 2, "squall_head"),
            ],
            env,
            tmp / "head.log",
        )
    )
    _wait(lambda: _dashboard_up(dashboard), 90, "the head's dashboard")
    started.append(
        Node(
            "worker",
            [f"--address=127.0.0.1:{gcs}", *node_args(worker_ports, 2, "squall_worker")],
            env,
            tmp / "worker.log",
        )
    )
    _wait(lambda: len([n for n in nodes(dashboard) if n["state"] == "ALIVE"]) >= 2, 90, "2 nodes")
    names: dict[str, str] = {}
    for n in nodes(dashboard):
        role = "head" if n.get("is_head_node") else "worker"
        names[n["node_id"]] = role
        res = {k: v for k, v in n["resources_total"].items() if not k.startswith("node:")}
        say(f"node {role:6s} id={n['node_id']} state={n['state']} resources={res}")
    head_id = next(k for k, v in names.items() if v == "head")
    worker_id = next(k for k, v in names.items() if v == "worker")
    check(head_id != worker_id, "two distinct node ids")
    say(f"cluster up in {time.monotonic() - t:.1f}s (GCS 127.0.0.1:{gcs}, dashboard {dashboard})")

    # ---- serve deploy, with the replicas on the head (its custom resource)
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    config["proxy_location"] = "HeadOnly"  # both nodes are one host: one proxy per port
    config["http_options"]["port"] = http_port
    app = config["applications"][0]
    app["runtime_env"]["env_vars"] = {
        k: v for k, v in env.items() if k.startswith("SQUALL_") and k != "SQUALL_RAY_JOBS_ADDRESS"
    }
    for dep in app["deployments"]:
        dep["ray_actor_options"]["resources"] = {"squall_head": 0.01}
    cfg = tmp / "serve_config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    t = time.monotonic()
    run([str(BIN / "serve"), "deploy", str(cfg), "-a", dashboard], env)
    api = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=60)
    _wait(lambda: _ok(api, "/ready"), 180, "the API's /ready")
    say(f"serve deploy: API ready in {time.monotonic() - t:.1f}s at :{http_port}")

    # ---- ingestion (the supervisor the replicas started) fills Postgres
    engine = create_engine(db_url)
    t = time.monotonic()

    def filled() -> bool:
        with engine.connect() as conn:
            rows = conn.execute(
                text('SELECT coin, "interval", count(*) FROM candles GROUP BY coin, "interval"')
            ).all()
        have = {(c, i): n for c, i, n in rows}
        return all(
            have.get((c, i), 0) >= BACKFILL_DAYS * 86400 // STEP[i] - 2
            for c in COINS
            for i in INTERVALS
        )

    _wait(filled, 300, "the ingestion backfill")
    say(
        f"ingestion: {len(COINS)} coins x {len(INTERVALS)} intervals in Postgres after "
        f"{time.monotonic() - t:.1f}s"
    )
    from ray.util.state import list_actors

    actors = [
        a.__dict__ if hasattr(a, "__dict__") else dict(a)
        for a in list_actors(dashboard, filters=[("state", "=", "ALIVE")], limit=1000)
    ]
    for a in sorted(actors, key=lambda a: a["class_name"]):
        if a["class_name"] in ("ComputeWorker", "SupervisorActor", "IngestSupervisor") or (
            "Squall" in a["class_name"]
        ):
            say(
                f"actor {a['class_name']:28s} on {names.get(a['node_id'], '?'):6s} "
                f"{a['node_id'][:16]}"
            )

    # ---- a sweep as a Ray job
    end = int(time.time()) // 86400 * 86400 - 86400
    spec = {
        "name": "cluster-check",
        "coins": COINS,
        "intervals": ["1h"],
        "start": end - 30 * 86400 + 86400 * 2,
        "end": end,
        "strategies": {"ema_cross": {"fast": [5, 10, 20], "slow": [50, 100]}},
        "objective": "sharpe",
        "top": 3,
    }
    spec_path = tmp / "sweep.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    before = compute_calls(dashboard)
    t = time.monotonic()
    out = run([str(BIN / "squall"), "sweep", "submit", str(spec_path), "--wait"], env, 600)
    say(f"sweep job finished in {time.monotonic() - t:.1f}s:\n" + out.strip())
    time.sleep(2)  # task events reach the state API within a second or so
    spread = placement(before, compute_calls(dashboard), names)
    say(f"sweep calls per node (state API): {dict(spread)}")

    # ---- 1M paths: two nodes, two nodes with the worker killed mid-run, head only, no Ray
    req = sim_request(tasks=40)
    results: dict[str, dict[str, Any]] = {}
    for label, kill in (("two nodes", None), ("worker killed mid-run", started[1])):
        before = compute_calls(dashboard)
        body = simulate(api, req, kill=kill)
        time.sleep(2)
        spread = placement(before, compute_calls(dashboard), names)
        results[label] = body
        ex = body.get("execution", {})
        say(
            f"simulate [{label}]: {body['status']} in {body['wall_s']:.1f}s "
            f"{body.get('error') or ''}; "
            f"fan-out nodes={[names.get(n, n) for n in ex.get('nodes', [])]} "
            f"retried={ex.get('retried')}; calls per (node, state): {dict(spread)}"
        )
        if kill is None:
            check({"head", "worker"} <= {n for n, _ in spread}, "chunks ran on both nodes")
        else:
            check(body["status"] == "succeeded", "the run survived the worker's death")
            check(body["killed_at_progress"], "the worker was killed while the run was going")
            check((ex.get("retried") or 0) > 0, "lost chunks were sent again (retried > 0)")
    _wait(lambda: len([n for n in nodes(dashboard) if n["state"] == "ALIVE"]) == 1, 60, "1 node")
    for n in nodes(dashboard):
        say(f"node {names.get(n['node_id'], '?'):6s} id={n['node_id']} state={n['state']}")
    before = compute_calls(dashboard)
    results["head only"] = simulate(api, req)
    time.sleep(2)
    say(
        f"simulate [head only]: {results['head only']['status']} in "
        f"{results['head only']['wall_s']:.1f}s; calls per (node, state): "
        f"{dict(placement(before, compute_calls(dashboard), names))}"
    )
    ref_env = {k: v for k, v in env.items() if k != "SQUALL_RAY_ADDRESS"}
    spec_file = tmp / "sim.json"
    spec_file.write_text(json.dumps({**req, "mode": "sync", "tasks": None}))
    t = time.monotonic()
    local = json.loads(
        run([str(BIN / "squall"), "simulate", "--spec", str(spec_file), "--json"], ref_env, 600)
    )
    results["one process, no Ray"] = local
    say(f"simulate [one process, no Ray]: {time.monotonic() - t:.1f}s")
    digests = {k: _digest(result_of(v)) for k, v in results.items()}
    for k, d in digests.items():
        say(f"result sha256 [{k}]: {d}")
    check(len(set(digests.values())) == 1, "every simulation result is bit-identical")
    shown = results["two nodes"].get("result") or {}
    scalars = {k: v for k, v in shown.items() if isinstance(v, int | float | str)}
    say(f"result (two nodes, scalars): {json.dumps(scalars)[:1500]}")

    # ---- Postgres afterwards
    with engine.connect() as conn:
        q = conn.execute
        off_grid = q(
            text(
                "SELECT count(*) FROM candles WHERE (\"interval\" = '1h' AND ts % 3600 <> 0) "
                "OR (\"interval\" = '1d' AND ts % 86400 <> 0)"
            )
        ).scalar()
        bad_ohlc = q(
            text(
                "SELECT count(*) FROM candles WHERE high < greatest(open, close) "
                "OR low > least(open, close) OR volume_base < 0"
            )
        ).scalar()
        dupes = q(
            text(
                'SELECT count(*) FROM (SELECT coin, "interval", ts FROM candles '
                "GROUP BY 1, 2, 3 HAVING count(*) > 1) d"
            )
        ).scalar()
        holes = q(
            text(
                'SELECT coin, "interval", count(*), min(ts), max(ts) FROM candles '
                'GROUP BY coin, "interval" ORDER BY 1, 2'
            )
        ).all()
        runs = q(text("SELECT kind, status, count(*) FROM backtest_runs GROUP BY 1, 2")).all()
    engine.dispose()
    check(off_grid == 0, f"candles on their interval's grid (off grid: {off_grid})")
    check(bad_ohlc == 0, f"no OHLC/volume violation ({bad_ohlc})")
    check(dupes == 0, f"no duplicate (coin, interval, ts) ({dupes})")
    for coin, interval, n, lo, hi in holes:
        expected = (hi - lo) // STEP[interval] + 1
        check(n == expected, f"{coin} {interval}: {n} candles, {expected} expected, no hole")
    say(f"registry: {[tuple(r) for r in runs]}")
    check(
        all(status == "succeeded" for _, status, _ in runs),
        "every run in the registry succeeded (none queued, running or failed)",
    )
    say(
        f"{'ALL CHECKS PASSED' if not FAILURES else 'FAILED: ' + '; '.join(FAILURES)} "
        f"in {time.monotonic() - T0:.0f}s"
    )
    return 1 if FAILURES else 0


def _digest(s: str) -> str:
    import hashlib

    return hashlib.sha256(s.encode()).hexdigest()[:16]


def _ok(api: httpx.Client, path: str) -> bool:
    try:
        return api.get(path).status_code == 200
    except httpx.HTTPError:
        return False


def _dashboard_up(url: str) -> bool:
    try:
        # any answer will do (401 under token auth: Ray's own clients send the token)
        return httpx.get(f"{url}/api/version", timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def _wait(ready: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(1)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s ({last})")


if __name__ == "__main__":
    sys.exit(main())
