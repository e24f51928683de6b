"""The candle page walk every exchange provider shares: cursor, overlap, gaps, termination.

Exchanges serve candles in pages of at most ``limit`` bars from a start time. The walk:

* after a **full** page the next one starts at its last open time (one bar of overlap, so a
  page boundary can never silently lose a bar); rows are deduplicated by open time with the
  later page winning (the freshest copy of the overlapping bar);
* a **short** page means the venue has nothing more up to its last bar: continue after it;
* an **empty** page moves the cursor forward by one page span. Binance itself skips over
  gaps, but a venue or proxy that answers only for ``[cursor, cursor + limit * step)`` would
  otherwise end the walk at the first outage;
* the walk ends once a page reaches ``stop_ms``. The cursor strictly advances, so the walk
  always terminates (the price is one request per page span when the data ends before
  ``stop_ms``: a delisted coin), and a guard on the page count turns a venue gone wrong
  (pages that never advance) into a ``TemporaryExchangeError`` instead of a hang.

Rows outside ``[start_ms, stop_ms]`` (a venue that starts a page before the cursor, or a bar
past the requested end) are dropped; nothing is invented for bars the venue did not send.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

from storage.errors import TemporaryExchangeError

Row = TypeVar("Row")


def walk_candle_pages(
    fetch_page: Callable[[int], Sequence[Row]],
    open_ms: Callable[[Row], int],
    *,
    start_ms: int,
    stop_ms: int,
    step_ms: int,
    limit: int,
    what: str,
) -> dict[int, Row]:
    """Every row the venue has with ``start_ms <= open time <= stop_ms``, keyed by open time.

    ``fetch_page(cursor)`` returns one page (at most ``limit`` rows, any order) starting at
    ``cursor`` (epoch ms); ``open_ms`` reads a row's open time; ``what`` names the series in
    errors. See the module docstring for how the cursor moves.
    """
    if limit < 2:
        raise ValueError(f"a page must hold at least 2 bars to advance with overlap, got {limit}")
    rows: dict[int, Row] = {}
    cursor = start_ms
    bars = max(0, (stop_ms - start_ms) // step_ms + 1)
    max_pages = 2 * math.ceil(bars / (limit - 1)) + 5
    pages = 0
    while cursor <= stop_ms:
        pages += 1
        if pages > max_pages:
            raise TemporaryExchangeError(
                f"{what}: pagination did not converge after {max_pages} pages "
                f"(cursor {cursor}, end {stop_ms})"
            )
        page = fetch_page(cursor)
        if not page:  # a silent gap: step over the window this page would have covered
            cursor += limit * step_ms
            continue
        for row in page:  # later pages win: the overlapping bar is the freshest copy
            t = open_ms(row)
            if start_ms <= t <= stop_ms:
                rows[t] = row
        newest = max(open_ms(row) for row in page)
        if newest >= stop_ms:
            break
        if len(page) >= limit:  # full page: overlap one bar so a boundary loses nothing
            cursor = newest if newest > cursor else cursor + step_ms
        else:  # short page: the venue has nothing more up to here; go on after it
            cursor = max(newest + step_ms, cursor + step_ms)
    return rows
