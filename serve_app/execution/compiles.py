"""XLA compilations counted per process, and the compilation cache every squall process shares.

JAX reports each backend compilation as a monitoring event and each executable loaded from the
persistent cache as a cache hit; :data:`COMPILES` counts both, and :func:`call_counted` tells
what one call cost this process: its pid, ``compiles`` (kernels built from scratch) and
``cache_loads`` (kernels read from the on-disk cache). Both 0 means every kernel the call ran
was already in memory: it ran warm.

:func:`configure_cache` points JAX at ``Settings.jax_cache_dir`` (the replicas, the workers, the
CLI and jobs all use the same folder), so a kernel compiled once on a machine is loaded, not
compiled, by every later process: a restarted worker or replica pays ~0.1-0.5 s, not seconds.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
CACHE_HIT = "/jax/compilation_cache/cache_hits"


class CompileCounter:
    """Counts XLA compilations and persistent-cache loads in this process."""

    def __init__(self) -> None:
        self.built = 0  # backend compile events (a cache load is one too)
        self.loaded = 0  # of which: served by the persistent cache
        self._installed = False
        self._lock = threading.Lock()

    @property
    def compiles(self) -> int:
        return self.built - self.loaded

    def install(self) -> None:
        with self._lock:
            if self._installed:
                return
            import jax

            def on_duration(event: str, _duration: float, **_kw: Any) -> None:
                if event == BACKEND_COMPILE:
                    self.built += 1

            def on_event(event: str, **_kw: Any) -> None:
                if event == CACHE_HIT:
                    self.loaded += 1

            jax.monitoring.register_event_duration_secs_listener(on_duration)  # type: ignore[arg-type]
            jax.monitoring.register_event_listener(on_event)
            self._installed = True


COMPILES = CompileCounter()


def process_info() -> dict[str, Any]:
    return {"pid": os.getpid(), "compiles": COMPILES.compiles, "cache_loads": COMPILES.loaded}


def call_counted(fn: Callable[..., Any], *args: Any) -> tuple[Any, dict[str, Any]]:
    """``fn(*args)`` and what it cost this process: pid, compiles and cache loads."""
    COMPILES.install()
    compiles, loaded = COMPILES.compiles, COMPILES.loaded
    result = fn(*args)
    return result, {
        "pid": os.getpid(),
        "compiles": COMPILES.compiles - compiles,
        "cache_loads": COMPILES.loaded - loaded,
    }


def cache_env(cache_dir: str | None) -> dict[str, str]:
    """Environment variables that give a new process the shared compilation cache."""
    if not cache_dir:
        return {}
    return {
        "JAX_COMPILATION_CACHE_DIR": str(Path(cache_dir).expanduser().resolve()),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
    }


def configure_cache(cache_dir: str | None) -> None:
    """Use the shared compilation cache in this process (before its first compile)."""
    if not cache_dir:
        return
    path = Path(cache_dir).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    import jax

    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
