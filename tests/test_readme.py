"""The README runs verbatim.

Every fenced ``bash`` block of README.md carries a marker on the line before it:
``<!-- readme-test -->`` (run by this test) or ``<!-- readme-test: skip (why) -->`` (prose about
Postgres, clusters, the set-up itself). The runnable blocks are read from the README itself, so
the examples cannot drift from what works.

The platform is started the way ``make run`` starts it: ``squall up`` in a fresh working
directory (so ``./var/squall.db`` is new), the default settings and the synthetic market, on
free ports (the README says ``localhost:8000``; the test rewrites that to its port). Once the
synthetic backfill has landed, each block runs in one ``bash`` (so an ``export`` holds for the
rest of its block), every command on its own: it must exit 0 and print something (``export``
and ``unset`` only set the environment). Lines that need the internet reach local stand-ins
instead: Binance's archive site (``SQUALL_BINANCE_ARCHIVE_URL``) serving archives built from
the real files in ``../shared/data``, and Binance's REST API (``SQUALL_BINANCE_SPOT_URL``), the
fake exchange of ``tests/fakes/exchange.py``. At the end the platform gets SIGINT, and no
process of its session (Ray's included) nor its port may be left.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest

from ingestion.archive import ArchiveName
from tests.fakes.archive_site import FakeArchiveSite, SourceBar, kline_csv
from tests.fakes.exchange import FakeExchange

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARK = re.compile(r"^<!-- readme-test(?P<skip>: skip \((?P<why>[^)]+)\))? -->$")
RUNNABLE_SECTIONS = ("## A quick tour", "## The command line")
DAY_MS = 86_400_000
ENV_ONLY = ("export ", "unset ")  # they only set the environment: no answer to check
WRITES = re.compile(r"[^0-9&>]>\s*(?P<file>[\w./-]+)\s*$")  # stdout redirected to a file
ASSIGNS = re.compile(r"^(?P<var>[A-Z_][A-Z0-9_]*)=\$\(")  # RUN=$(curl ...): the answer is $RUN


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    section: str  # the last ``## `` heading above it
    run: bool
    commands: tuple[str, ...]


def commands_of(lines: list[str]) -> tuple[str, ...]:
    """Shell commands of a block: continuation lines joined, blank and comment lines dropped."""
    out: list[str] = []
    pending = ""
    for raw in lines:
        if not pending and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        out.append(pending + raw.strip())
        pending = ""
    assert not pending, f"a command ends with a continuation: {pending!r}"
    return tuple(out)


def readme_blocks(text: str) -> list[Block]:
    """Every ``bash`` block with its marker; a block without one is an error."""
    lines = text.splitlines()
    blocks: list[Block] = []
    section = ""
    i = 0
    while i < len(lines):
        if lines[i].startswith("## "):
            section = lines[i]
        if lines[i].strip() == "```bash":
            mark = MARK.match(lines[i - 1].strip()) if i else None
            assert mark, (
                f"README.md:{i + 1}: a bash block needs <!-- readme-test --> or "
                "<!-- readme-test: skip (why) --> on the line before it"
            )
            end = lines.index("```", i + 1)
            body = lines[i + 1 : end]
            blocks.append(Block(i + 1, section, not mark["skip"], commands_of(body)))
            i = end
        i += 1
    return blocks


BLOCKS = readme_blocks(README.read_text())
RUNNABLE = [b for b in BLOCKS if b.run]


# ------------------------------------------------------------------ the README's own shape
def test_runnable_blocks_are_the_tour_and_the_command_line() -> None:
    assert len(RUNNABLE) >= 4
    assert {b.section for b in RUNNABLE} == set(RUNNABLE_SECTIONS)
    # every block of those sections runs, but the illustration of a refusal
    skipped = [b for b in BLOCKS if not b.run and b.section in RUNNABLE_SECTIONS]
    assert [b.commands[0] for b in skipped] == ["squall import btc.csv --coin BTC --interval 1d"]


def test_one_spelling_of_every_command() -> None:
    text = README.read_text()
    assert ".venv/bin/squall" not in text and "../shared" not in text
    for block in BLOCKS:
        for cmd in block.commands:
            bare = ASSIGNS.sub("", cmd)  # RUN=$(curl ...) is checked as the curl it runs
            first = re.sub(r"^(\w+=\S+ )+", "", bare).split()[0]  # VAR=value squall ...
            assert first in {"squall", "curl", "export", "unset", "echo", "make", "ray",
                             "serve", "."}, cmd  # fmt: skip
            if first == "curl":
                assert bare.startswith("curl -sf"), f"an HTTP error must fail: {cmd}"


def test_no_example_asks_outside_the_default_setup() -> None:
    """The synthetic market has the last 90 days: a tour example never names a date; dates
    appear only where real history is downloaded (the real-data database)."""
    for block in RUNNABLE:
        real = any("real.db" in c for c in block.commands)
        for cmd in block.commands:
            if re.search(r"\d{4}-\d{2}", cmd):
                assert real, f"a date outside what `make run` ingests: {cmd}"


# ------------------------------------------------------------------------ the stand-ins
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _daily_bars(path: Path) -> list[SourceBar]:
    """A ``timestamp,open,...`` daily file (ISO dates) as bars, as their text."""
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        return [
            SourceBar(int(datetime.fromisoformat(ts).replace(tzinfo=UTC).timestamp()) * 1000,
                      o, h, lo, c, v)
            for ts, o, h, lo, c, v in reader
        ]  # fmt: skip


def publish_daily(site: FakeArchiveSite, path: Path, symbol: str, last_month: date) -> None:
    """Monthly spot archives of a daily file, whole months up to ``last_month`` (the files end
    inside January 2026, on a day still in progress)."""
    months: dict[tuple[int, int], list[SourceBar]] = defaultdict(list)
    for bar in _daily_bars(path):
        t = datetime.fromtimestamp(bar.open_ms / 1000, UTC)
        months[(t.year, t.month)].append(bar)
    for (y, m), bars in months.items():
        if (y, m) <= (last_month.year, last_month.month):
            name = ArchiveName(symbol, "1d", y, m, None)
            site.publish("spot", name, kline_csv(bars, DAY_MS, micro=y >= 2025))


@pytest.fixture(scope="module")
def archives(shared_data: Path) -> Iterator[FakeArchiveSite]:
    with FakeArchiveSite() as site:
        last = date(2025, 12, 1)
        publish_daily(site, shared_data / "binance_spot_BTCUSDT_1d_2017-2026.csv", "BTCUSDT", last)
        publish_daily(site, shared_data / "binance_spot_ETHUSDT_1d_2017-2026.csv", "ETHUSDT", last)
        # a data.binance.vision futures CSV, header included, as the archive holds it
        link = (shared_data / "binance_um_LINKUSDT_1m_2023-02_kline12.csv").read_text()
        site.publish("um", ArchiveName("LINKUSDT", "1m", 2023, 2, None), link)
        yield site


# --------------------------------------------------------------------------- the platform
@dataclass
class Platform:
    work: Path
    port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path


def _session_alive(sid: int) -> list[int]:
    """Processes still in session ``sid`` (from /proc): ``squall up`` and everything Ray
    started for it (raylet, GCS, workers, replicas and HAProxy have process groups of their
    own, but stay in the session)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _wait(what: str, check: Callable[[], bool], timeout: float, platform: Platform) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if platform.process.poll() is not None:
            pytest.fail(f"squall up exited ({platform.process.returncode}): {_tail(platform.log)}")
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:.0f}s: {_tail(platform.log)}")
        time.sleep(1.0)


def _tail(path: Path, n: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


def _settled(base: str) -> bool:
    """The first start's work is done: every default coin x interval holds its 90 synthetic
    days (``/ready`` is 503 while a series is behind: "ingestion stalled"), the first
    snapshots are stored, and the platform says it is ready."""
    coins = httpx.get(f"{base}/market/coins", timeout=10).json()["coins"]
    have = {(c["coin"], s["interval"]): s["count"] for c in coins for s in c["series"]}
    per_day = {"1m": 1440, "5m": 288, "1h": 24, "1d": 1}
    filled = all(
        have.get((coin, iv), 0) >= 89 * n
        for coin in ("BTC", "ETH", "SOL")
        for iv, n in per_day.items()
    )
    return (
        filled
        and httpx.get(f"{base}/market/snapshot", params={"coin": "ETH"}, timeout=10).is_success
        and httpx.get(f"{base}/ready", timeout=10).status_code == 200
    )


@pytest.fixture(scope="module")
def platform(
    tmp_path_factory: pytest.TempPathFactory, archives: FakeArchiveSite
) -> Iterator[Platform]:
    squall = Path(sys.executable).parent / "squall"
    if not squall.exists():
        pytest.skip(f"no squall script beside {sys.executable}: pip install -e . first")
    work = tmp_path_factory.mktemp("readme")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL_")}
    env.update(
        PATH=f"{squall.parent}{os.pathsep}{env.get('PATH', '')}",
        SQUALL_DATA_SOURCE="synthetic",
        SQUALL_API_PORT=str(port),
        SQUALL_DASHBOARD_PORT=str(_free_port()),
        # HAProxy's fixed ports: free ones, so a platform already running is not in the way
        RAY_SERVE_HAPROXY_STATS_PORT=str(_free_port()),
        RAY_SERVE_HAPROXY_METRICS_PORT=str(_free_port()),
        RAY_SERVE_FALLBACK_PROXY_HTTP_PORT=str(_free_port()),
        RAY_SERVE_FALLBACK_PROXY_GRPC_PORT=str(_free_port()),
        # the suite's compiled-kernel cache and warm-up policy (tests/conftest.py)
        SQUALL_JAX_CACHE_DIR=os.environ.get("SQUALL_JAX_CACHE_DIR", str(ROOT / "var/jax")),
        SQUALL_WARM_UP=os.environ.get("SQUALL_WARM_UP", "false"),
        SQUALL_BINANCE_ARCHIVE_URL=archives.url,
    )
    log = work / "squall-up.log"
    with FakeExchange() as exchange:
        env["SQUALL_BINANCE_SPOT_URL"] = env["SQUALL_BINANCE_FUTURES_URL"] = exchange.base_url
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [str(squall), "up"], cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        p = Platform(work, port, env, process, log)
        try:
            base = f"http://127.0.0.1:{port}"
            _wait("/ready", lambda: httpx.get(f"{base}/ready", timeout=5).status_code == 200,
                  240, p)  # fmt: skip
            _wait("the synthetic backfill", lambda: _settled(base), 300, p)
            yield p
        finally:
            _stop(p)


def _stop(p: Platform) -> None:
    """SIGINT, as Ctrl-C; then nothing of the platform may be left."""
    if p.process.poll() is None:
        p.process.send_signal(signal.SIGINT)
        try:
            p.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            _kill(_session_alive(p.process.pid))
            pytest.fail(f"squall up did not stop within 120 s of SIGINT: {_tail(p.log)}")
    deadline = time.monotonic() + 30
    while (left := _session_alive(p.process.pid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if left:
        _kill(left)
        pytest.fail(f"processes of squall up left after it stopped: {left}")
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", p.port)) != 0, "the API port still answers"
    assert "stopped" in _tail(p.log, 5), _tail(p.log)


# ------------------------------------------------------------------------------ the runs
def _script(block: Block, port: int, out: Path) -> str:
    """One bash script for a block: each command's stdout, stderr and status to files (in
    braces, not a subshell, so ``export`` carries on to the next command)."""
    parts = []
    for k, command in enumerate(block.commands):
        cmd = command.replace("localhost:8000", f"localhost:{port}")
        assigned = ASSIGNS.match(cmd)
        if assigned:  # the value it set is its answer (empty when the command inside failed)
            cmd += '\nprintf "%s\\n" "$' + assigned["var"] + '"'
        parts.append(f"{{ {cmd}\n}} > {out}/{k}.out 2> {out}/{k}.err; echo $? > {out}/{k}.rc")
    return "\n".join(parts) + "\n"


@pytest.mark.ray
@pytest.mark.realdata
@pytest.mark.timeout(900)
@pytest.mark.parametrize("block", RUNNABLE, ids=[f"line{b.line}" for b in RUNNABLE])
def test_the_readme_block_runs_verbatim(block: Block, platform: Platform) -> None:
    out = platform.work / f"block-{block.line}"
    out.mkdir()
    script = out / "block.sh"
    script.write_text(_script(block, platform.port, out))
    started = time.monotonic()
    subprocess.run(["bash", str(script)], cwd=platform.work, env=platform.env, timeout=600,
                   check=False)  # fmt: skip
    took = time.monotonic() - started
    failures = []
    for k, cmd in enumerate(block.commands):
        rc = (out / f"{k}.rc").read_text().strip() if (out / f"{k}.rc").exists() else "none"
        stdout = (out / f"{k}.out").read_text(errors="replace")
        written = WRITES.search(cmd)  # `echo ... > spec.json`: the answer is the file
        if written:
            target = platform.work / written["file"]
            stdout = target.read_text(errors="replace") if target.is_file() else ""
        if rc != "0" or (not stdout.strip() and not cmd.startswith(ENV_ONLY)):
            err = (out / f"{k}.err").read_text(errors="replace")[-1500:]
            failures.append(f"$ {cmd}\n  exit {rc}, stdout {len(stdout)} chars\n  stderr: {err}")
    if failures:
        try:
            ready = httpx.get(f"http://127.0.0.1:{platform.port}/ready", timeout=10).text
        except httpx.HTTPError as exc:
            ready = repr(exc)
        failures.append(f"/ready now: {ready[:1500]}\nsquall up log:\n{_tail(platform.log)}")
    assert not failures, f"README.md:{block.line} ({took:.0f}s):\n" + "\n".join(failures)
