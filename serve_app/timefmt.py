"""Time in and out of squall: parse ISO-8601 or unix seconds, render ISO-8601 UTC.

Every timestamp squall returns is given twice: ``ts`` as ``2024-03-01T00:00:00Z`` and
``ts_unix`` as integer unix seconds. Inputs accept either form.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import numpy as np

from storage.errors import ConfigurationError

ACCEPTED_TIME_FORMATS = (
    "unix seconds (1709251200)",
    "ISO-8601 date (2024-03-01)",
    "ISO-8601 UTC time (2024-03-01T00:00:00Z)",
    "ISO-8601 time with offset (2024-03-01T02:00:00+02:00; no offset means UTC)",
)
_UNIX = re.compile(r"^[+-]?\d+(\.\d+)?$")
_MAX_UNIX = 253_402_300_799  # 9999-12-31T23:59:59Z


def iso(ts: int) -> str:
    """``ts`` (unix seconds) as ISO-8601 UTC with a ``Z`` suffix."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_array(ts: np.ndarray) -> list[str]:
    """Vectorised :func:`iso` for an int64 array of unix seconds."""
    as_dt = ts.astype("datetime64[s]")
    return np.datetime_as_string(as_dt, unit="s", timezone="UTC").tolist()


def parse_time(value: str, name: str) -> int:
    """Unix seconds from an ISO-8601 string or a unix-seconds number; 422 if neither."""
    text = value.strip()
    if _UNIX.match(text):
        number = float(text)
        if number > _MAX_UNIX:
            hint = " (it looks like milliseconds: divide by 1000)" if number < 1e14 else ""
            raise _bad_time(name, value, f"{number:.0f} is beyond year 9999{hint}")
        if number < 0:
            raise _bad_time(name, value, "times before 1970 are not supported")
        return int(number)
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise _bad_time(name, value, "it is neither ISO-8601 nor unix seconds") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    seconds = parsed.timestamp()
    if seconds < 0:
        raise _bad_time(name, value, "times before 1970 are not supported")
    return int(seconds // 1)


def _bad_time(name: str, value: str, why: str) -> ConfigurationError:
    return ConfigurationError(
        f"could not read {name}={value!r}: {why}. Accepted formats: "
        + "; ".join(ACCEPTED_TIME_FORMATS),
        code="invalid_time",
        parameter=name,
        accepted_formats=list(ACCEPTED_TIME_FORMATS),
    )
