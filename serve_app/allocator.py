"""glibc allocator settings for processes that run the ``compute`` kernels on big arrays.

XLA:CPU allocates fresh output and temporary buffers on every call. With glibc's defaults a
large buffer is a new ``mmap`` (and a freed one goes straight back to the kernel), so every
call page-faults its whole working set in again: on 1M-bar series that was about half of a
call's time. The tunables below keep freed memory in the process and reuse it:

* ``arena_max=1``: one heap, so a buffer freed by one XLA thread serves the next call's
  allocation on another;
* ``mmap_max=0``: large blocks come from the heap, not from fresh mappings;
* ``trim_threshold`` huge: freed memory is never handed back to the kernel;
* ``hugetlb=1``: the heap is madvised for transparent huge pages (one fault per 2 MiB when it
  grows, and fewer TLB misses on the long arrays).

They act only when the process starts (``GLIBC_TUNABLES``), so they are passed to Ray
workers through ``runtime_env`` and the benchmarks re-execute themselves with them. Measured
effect: ``docs/indicators.md``, *Performance*.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

TUNABLES: tuple[str, ...] = (
    "glibc.malloc.arena_max=1",
    "glibc.malloc.mmap_max=0",
    "glibc.malloc.trim_threshold=1099511627776",
    "glibc.malloc.hugetlb=1",
)
_REEXEC_MARK = "SQUALL_ALLOCATOR_REEXEC"


def tunables(existing: str | None = None) -> str:
    """``GLIBC_TUNABLES`` with ours appended to ``existing`` (whose own settings win)."""
    given = [t for t in (existing or "").split(":") if t]
    names = {t.split("=", 1)[0] for t in given}
    return ":".join(given + [t for t in TUNABLES if t.split("=", 1)[0] not in names])


def worker_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``env_vars`` entry for a Ray ``runtime_env`` of kernel-running workers."""
    source = os.environ if env is None else env
    return {"GLIBC_TUNABLES": tunables(source.get("GLIBC_TUNABLES"))}


def active(env: Mapping[str, str] | None = None) -> bool:
    """True when this process was started with every one of :data:`TUNABLES`."""
    source = os.environ if env is None else env
    return tunables(source.get("GLIBC_TUNABLES")) == source.get("GLIBC_TUNABLES", "")


def reexec_with_tunables(argv: Sequence[str] | None = None) -> None:
    """Replace this process by itself started with the tunables (no-op once they are set).

    For command-line entry points such as the benchmarks: call it first thing in ``main``.
    """
    if active() or os.environ.get(_REEXEC_MARK):
        return
    env = {**os.environ, **worker_env(), _REEXEC_MARK: "1"}
    args = list(sys.argv if argv is None else argv)
    os.execve(sys.executable, [sys.executable, *_python_args(args)], env)


def _python_args(argv: list[str]) -> list[str]:
    """``sys.argv`` as the interpreter needs it to run the same thing again."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:  # started with ``python -m package.module``
        return ["-m", spec.name.removesuffix(".__main__"), *argv[1:]]
    return argv
