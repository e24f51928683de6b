"""JAX, configured once for ``compute``: 64-bit floats everywhere.

Importing this module runs ``jax.config.update("jax_enable_x64", True)``. Prices of about
60,000 with cent ticks need float64: float32 has 24 bits (~7 digits), so a 60,000 price is
resolved only to ~0.004 and an EMA of it drifts far beyond the 1e-9 agreement the kernels keep
with their NumPy references. The flag is process-wide (it changes JAX's default dtype for
every caller in the process); the kernels also cast their inputs to ``float64`` explicitly
and :func:`require_x64` checks the flag really took, so a caller that turned it off again gets
an error instead of silently rounded prices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

jax.config.update("jax_enable_x64", True)

F64 = jnp.float64
NAN = float("nan")

__all__ = ["F64", "NAN", "jax", "jnp", "lax", "require_x64"]


def require_x64() -> None:
    """Raise ``RuntimeError`` unless JAX computes in 64-bit (someone may have reset the flag)."""
    if jnp.asarray(1.0).dtype != jnp.float64:
        raise RuntimeError(
            "compute needs jax_enable_x64=True; something in this process turned it off"
        )
