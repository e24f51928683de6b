"""Property-based fuzzing of the whole API against its own ``/openapi.json`` (schemathesis).

The real app, in-process over ASGI, on a migrated SQLite database holding real Binance daily
candles for three coins (plus funding, open interest and a snapshot), with auth on: every
operation of the document gets ``FUZZ_EXAMPLES`` generated requests, valid and invalid ones
(schemathesis' positive and negative modes), sent with the token. Each answer must pass
``not_a_server_error``, ``status_code_conformance``, ``content_type_conformance``,
``response_headers_conformance`` and ``response_schema_conformance``: no 5xx, and every status
code, media type and body the document declares. Generation is derandomized (a fixed seed per
operation), so a CI run is reproducible.

``SQUALL_FUZZ_EXAMPLES=N`` runs N cases per operation (a hunting run: the figures of the last
one are in docs/api.md); CI runs the default.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

schemathesis = pytest.importorskip("schemathesis")

from fastapi import FastAPI  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ingestion.fileimport import parse_candle_file  # noqa: E402
from serve_app.api import create_app  # noqa: E402
from serve_app.settings import Settings  # noqa: E402
from storage.candles import CandleRepository  # noqa: E402
from storage.derivatives import FundingRepository, OpenInterestRepository  # noqa: E402
from storage.engine import make_engine, session_factory, transaction  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.snapshots import SnapshotRepository  # noqa: E402

FUZZ_EXAMPLES = int(os.environ.get("SQUALL_FUZZ_EXAMPLES", "30"))
MIN_CASES = 1_000
TOKEN = "fuzz-token-0123456789abcdef"
COINS = {"BTC": "BTCUSDT", "ETH": "ETHUSDT", "SOL": "SOLUSDT"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _fill(url: str, shared_data: Path) -> None:
    upgrade(url)
    engine = make_engine(url)
    last = 0
    with transaction(session_factory(engine)) as session:
        for coin, pair in COINS.items():
            path = next(shared_data.glob(f"binance_spot_{pair}_1d_*.csv"))
            frame = parse_candle_file(path, coin=coin, interval="1d").frame
            CandleRepository(session).upsert(frame)
            last = max(last, int(frame["ts"].iloc[-1]))
        ts = last - 86_400 * 30 + 8 * 3_600 * pd.RangeIndex(90).to_numpy()
        FundingRepository(session).upsert(
            pd.DataFrame(
                {"coin": "BTC", "ts": ts, "funding_rate": 1e-4, "mark_price": 6e4, "source": "t"}
            )
        )
        OpenInterestRepository(session).upsert(
            pd.DataFrame(
                {
                    "coin": "BTC",
                    "ts": ts,
                    "open_interest": 1e4,
                    "open_interest_quote": 6e8,
                    "source": "t",
                }
            )
        )
        SnapshotRepository(session).upsert(
            [{"coin": "BTC", "ts": last, "last_price": 6e4, "source": "test"}]
        )
    engine.dispose()


@pytest.fixture(scope="module")
def app(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'squall.db'}"
    _fill(url, shared_data)
    values: dict[str, Any] = {
        "database_url": url,
        "coins": list(COINS),
        "intervals": ["1d"],
        "ingest_enabled": False,
        "log_level": "ERROR",
        "api_token": TOKEN,
        "max_candles_per_request": 1000,
        "job_queue_timeout_s": 120,
    }
    yield create_app(Settings(**values), configure_logs=False, background=False)


def _fuzz(operation: Any, mode: GenerationMode, examples: int, seen: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(headers=headers, timeout=120)
        seen["cases"] += 1
        seen["status"][response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (Exception, BaseExceptionGroup) as exc:  # all failures reported together
            first = str(exc).strip().splitlines()
            seen["failures"].append(
                f"{operation.label} [{mode.value}] {response.status_code}: "
                f"{' | '.join(first[:6])[:600]}\n    {case.as_curl_command()[:400]}"
            )

    run()


def test_every_operation_fuzzed_without_5xx_or_schema_violations(app: FastAPI) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    seen: dict[str, Any] = {"cases": 0, "status": Counter(), "failures": []}
    started = time.monotonic()
    per_operation: dict[str, int] = {}
    timing: dict[str, float] = {}
    for operation in operations:
        before = seen["cases"]
        t0 = time.monotonic()
        half = max(1, FUZZ_EXAMPLES // 2)
        _fuzz(operation, GenerationMode.POSITIVE, FUZZ_EXAMPLES - half, seen)
        _fuzz(operation, GenerationMode.NEGATIVE, half, seen)
        per_operation[operation.label] = seen["cases"] - before
        timing[operation.label] = time.monotonic() - t0
    wall = time.monotonic() - started
    server_errors = sum(
        n for status, n in seen["status"].items() if status >= 500 and status != 503
    )
    print(
        f"\nfuzz: {seen['cases']} cases over {len(operations)} operations in {wall:.1f}s; "
        f"statuses {dict(sorted(seen['status'].items()))}; 5xx (not 503) {server_errors}; "
        f"failures {len(seen['failures'])}"
    )
    slowest = sorted(timing.items(), key=lambda kv: -kv[1])[:8]
    print("slowest: " + ", ".join(f"{k} {v:.1f}s" for k, v in slowest))
    assert not seen["failures"], "\n".join(seen["failures"][:40])
    assert len(operations) == len(app.openapi()["paths"] and per_operation)
    assert seen["cases"] >= MIN_CASES or FUZZ_EXAMPLES < 30
    assert all(n >= 1 for n in per_operation.values()), per_operation
