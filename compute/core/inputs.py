"""Checking what callers hand to ``compute`` and running a jitted kernel on it (NumPy side).

The contract (violations raise :class:`~compute.core.errors.InputDataError` naming the array and the
first bad position; bad parameters raise :class:`~compute.core.errors.SpecError`):

* a series is ``(T,)`` or ``(K, T)`` (K series, time last), float64 after conversion, finite;
  prices are ``> 0`` (log returns need it), volumes ``>= 0``; OHLC arrays share one shape and
  satisfy ``low <= open, close <= high``;
* ``ts`` is ``(T,)``, shared by all series: unix **seconds** (integers) or ``datetime64``,
  strictly increasing; integers beyond year 5000 are rejected as "probably milliseconds";
* ``T = 0`` is valid and gives empty results; ``T`` shorter than a warm-up gives all-NaN.

:func:`run` pads the time axis at the end (repeating the last bar) to a bucketed length, so one
compilation serves a range of lengths; every kernel is causal, so padding after the data
cannot change any value before it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from compute.core.errors import InputDataError, SpecError

ArrayLike = npt.ArrayLike
IntParam = int | Sequence[int] | np.ndarray
FloatParam = float | Sequence[float] | np.ndarray

SECONDS_PER_DAY = 86_400
MAX_UNIX_SECONDS = 95_617_584_000  # 5000-01-01: larger integers are probably milliseconds
MIN_BUCKET = 64
ALIGN = 64  # bytes


def _first_bad(mask: np.ndarray) -> str:
    index = np.unravel_index(int(np.argmax(mask)), mask.shape)
    return str(tuple(int(i) for i in index)) if mask.ndim > 1 else str(int(index[0]))


def series(
    name: str, values: ArrayLike, *, minimum: float | None, strict: bool, finite: bool = True
) -> np.ndarray:
    """``values`` as a float64 ``(T,)`` or ``(K, T)`` array, finite and bounded below."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputDataError(f"{name}: not numeric ({exc})") from None
    if arr.ndim not in (1, 2):
        raise InputDataError(f"{name}: expected shape (T,) or (K, T), got {arr.shape}")
    if not finite:
        return arr
    bad = ~np.isfinite(arr)
    if bad.any():
        raise InputDataError(f"{name}: non-finite value {arr[bad][0]} at {_first_bad(bad)}")
    if minimum is not None:
        low = arr <= minimum if strict else arr < minimum
        if low.any():
            rule = ">" if strict else ">="
            raise InputDataError(
                f"{name}: must be {rule} {minimum:g}, got {arr[low][0]} at {_first_bad(low)}"
            )
    return arr


def price(name: str, values: ArrayLike) -> np.ndarray:
    """A price series: finite and strictly positive."""
    return series(name, values, minimum=0.0, strict=True)


def volume(name: str, values: ArrayLike) -> np.ndarray:
    """A volume series: finite and non-negative."""
    return series(name, values, minimum=0.0, strict=False)


def ohlc(check: bool = True, **arrays: ArrayLike) -> list[np.ndarray]:
    """Validate named OHLC(V) arrays (any subset, keyword order kept) as one consistent set.

    With ``check=False`` only conversion and shapes are checked: the caller checks the values
    elsewhere (the pipeline does it inside its jitted call, where the data are read anyway,
    and calls this again with ``check=True`` to word the error when something is wrong).
    """
    if check:
        out = {k: volume(k, v) if k == "volume" else price(k, v) for k, v in arrays.items()}
    else:
        out = {k: series(k, v, minimum=None, strict=False, finite=False) for k, v in arrays.items()}
    shapes = {k: v.shape for k, v in out.items()}
    if len(set(shapes.values())) > 1:
        raise InputDataError(f"arrays differ in shape: {shapes}")
    if not check:
        return list(out.values())
    high, low = out.get("high"), out.get("low")
    for name in ("open", "close"):
        if name in out and high is not None and (bad := out[name] > high).any():
            raise InputDataError(f"{name} above high at {_first_bad(bad)}")
        if name in out and low is not None and (bad := out[name] < low).any():
            raise InputDataError(f"{name} below low at {_first_bad(bad)}")
    if high is not None and low is not None and (bad := low > high).any():
        raise InputDataError(f"low above high at {_first_bad(bad)}")
    return list(out.values())


def unix_seconds(ts: ArrayLike, length: int) -> np.ndarray:
    """``ts`` as int64 unix seconds, shape ``(length,)``, strictly increasing."""
    arr = np.asarray(ts)
    if arr.ndim != 1 or arr.shape[0] != length:
        raise InputDataError(f"ts: expected shape ({length},), got {arr.shape}")
    if np.issubdtype(arr.dtype, np.datetime64):
        if np.isnat(arr).any():
            raise InputDataError(f"ts: NaT at {_first_bad(np.isnat(arr))}")
        secs = arr.astype("datetime64[s]").astype(np.int64)
    elif np.issubdtype(arr.dtype, np.integer) or (
        np.issubdtype(arr.dtype, np.floating)
        and np.isfinite(arr).all()
        and (arr == np.floor(arr)).all()
    ):
        secs = arr.astype(np.int64)
    else:
        raise InputDataError(f"ts: expected integer unix seconds or datetime64, got {arr.dtype}")
    if length and np.abs(secs).max() > MAX_UNIX_SECONDS:
        raise InputDataError("ts: values beyond year 5000; pass unix seconds, not milliseconds")
    if length > 1 and (bad := np.diff(secs) <= 0).any():
        raise InputDataError(f"ts: not strictly increasing at {_first_bad(bad)} -> next")
    return secs


def day_starts(secs: np.ndarray) -> np.ndarray:
    """1.0 on each bar that opens a new UTC day (and on the first bar), else 0.0."""
    day = np.floor_divide(secs, SECONDS_PER_DAY)
    starts = np.ones(secs.shape[0], dtype=np.float64)
    starts[1:] = day[1:] != day[:-1]
    return starts


def session_starts(ts: ArrayLike, length: int) -> np.ndarray:
    """:func:`day_starts` of validated timestamps ``ts`` (unix seconds or datetime64)."""
    return day_starts(unix_seconds(ts, length))


def window(name: str, value: Any, *, minimum: int = 1) -> int:
    """A static window length: a plain integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise SpecError(f"{name} must be an integer window length, got {value!r}")
    if value < minimum:
        raise SpecError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def period(name: str, value: Any, *, minimum: int = 1) -> int | np.ndarray:
    """A (traceable) period: an integer ``>= minimum`` or a 1-D array of them."""
    if np.ndim(value) == 0:
        return window(
            name, value.item() if isinstance(value, np.ndarray) else value, minimum=minimum
        )
    arr = np.asarray(value)
    if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise SpecError(f"{name} must be an integer or a non-empty 1-D integer array")
    if (arr < minimum).any():
        raise SpecError(f"{name} must be >= {minimum}, got {arr.min()}")
    return arr.astype(np.int64)


def real(
    name: str, value: Any, *, low: float | None = None, high: float | None = None
) -> float | np.ndarray:
    """A float parameter (or 1-D array of them) inside the open interval ``(low, high)``."""
    arr = np.asarray(value, dtype=np.float64) if not isinstance(value, bool) else None
    if arr is None or arr.ndim > 1 or arr.size == 0 or not np.isfinite(arr).all():
        raise SpecError(f"{name} must be a finite number or 1-D array of them, got {value!r}")
    if (low is not None and (arr <= low).any()) or (high is not None and (arr >= high).any()):
        raise SpecError(f"{name} must lie in ({low}, {high}), got {value!r}")
    return float(arr) if arr.ndim == 0 else arr


def positive_float(name: str, value: Any) -> float | np.ndarray:
    """A float parameter ``> 0`` (or 1-D array of them)."""
    return real(name, value, low=0.0)


def nonnegative_float(name: str, value: Any) -> float | np.ndarray:
    """A float parameter ``>= 0`` (or 1-D array of them)."""
    out = real(name, value)
    if np.any(np.asarray(out) < 0):
        raise SpecError(f"{name} must be >= 0, got {value!r}")
    return out


def require_less(a_name: str, a: Any, b_name: str, b: Any) -> None:
    """SpecError unless ``a < b`` element-wise."""
    if not np.all(np.asarray(a) < np.asarray(b)):
        raise SpecError(f"{a_name} must be smaller than {b_name}, got {a!r} and {b!r}")


def bucket(length: int) -> int:
    """The padded length compiled for ``length`` bars: at most ~6% more than ``length``.

    A multiple of 64 (at least 64, 16-32 sizes per doubling) plus 8 bars, so the rows of a
    ``(K, T)`` float64 batch are not a multiple of 4 KiB apart: column-wise loops over rows
    that far apart map to the same cache sets and thrash them.
    """
    if length <= MIN_BUCKET:
        return MIN_BUCKET + 8
    step = max(MIN_BUCKET, 1 << (length.bit_length() - 5))
    return -(-length // step) * step + 8


def aligned_empty(shape: tuple[int, ...], dtype: npt.DTypeLike = np.float64) -> np.ndarray:
    """An uninitialised array whose data start on a 64-byte boundary.

    XLA:CPU takes such NumPy arrays without copying them; a merely 16-byte aligned one is
    copied on every call (about 5 ms per 1M-bar series here).
    """
    dt = np.dtype(dtype)
    count = int(np.prod(shape))
    raw = np.empty(count * dt.itemsize + ALIGN, dtype=np.uint8)
    start = (-raw.ctypes.data) % ALIGN
    return raw[start : start + count * dt.itemsize].view(dt).reshape(shape)


def pad_time(arr: np.ndarray, target: int) -> np.ndarray:
    """A 64-byte aligned copy of ``arr`` extended along its last axis to ``target`` by repeating
    the last bar (or 1.0 when empty)."""
    out = aligned_empty((*arr.shape[:-1], target), arr.dtype)
    length = arr.shape[-1]
    out[..., :length] = arr
    if target > length:
        out[..., length:] = arr[..., -1:] if length else 1
    return out


def run(
    fn: Callable[..., Any], arrays: Sequence[np.ndarray], params: Sequence[Any], **static: Any
) -> Any:
    """Call a jitted batched kernel on validated NumPy series and return NumPy results.

    ``arrays`` share one shape, ``(T,)`` or ``(K, T)``. A 1-D parameter gives one value per
    series; with 1-D series it sweeps, broadcasting the series to one row per value. Results
    keep the input's layout: ``(T,)`` in, ``(T,)`` out.
    """
    shape = arrays[0].shape
    if any(a.shape != shape for a in arrays):
        raise InputDataError(f"arrays differ in shape: {[a.shape for a in arrays]}")
    sizes = {int(np.size(p)) for p in params if np.ndim(p) == 1}
    if len(sizes) > 1:
        raise SpecError(f"parameter arrays differ in length: {sorted(sizes)}")
    rows = sizes.pop() if sizes else None
    squeeze = len(shape) == 1 and rows is None
    if len(shape) == 1:
        arrays = [np.broadcast_to(a, (rows or 1, shape[0])) for a in arrays]
    elif rows is not None and rows != shape[0]:
        raise SpecError(f"{rows} parameter values for {shape[0]} series")
    length = shape[-1]
    padded = [pad_time(a, bucket(length)) for a in arrays]
    out = fn(*padded, *params, **static)

    def finish(o: Any) -> np.ndarray:
        res = np.asarray(o)[:, :length]
        return res[0] if squeeze else res

    return tuple(finish(o) for o in out) if isinstance(out, tuple | list) else finish(out)
