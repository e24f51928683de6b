"""compute.core.fastmath against NumPy: every float64 magnitude, subnormals and special values."""

from __future__ import annotations

import numpy as np

from compute.core import fastmath
from compute.core.jaxconf import jax

_log = jax.jit(fastmath.log)


def test_log_is_within_3_ulp_of_numpy_over_the_float64_range() -> None:
    rng = np.random.default_rng(11)
    x = np.concatenate(
        [
            np.exp(rng.normal(0.0, 1e-3, 20_000)),  # price ratios: log returns near 0
            10.0 ** rng.uniform(-323.0, 308.0, 20_000),  # every magnitude, subnormals too
            rng.uniform(0.5, 2.0, 20_000),  # both sides of the sqrt(2) switch
            np.nextafter(np.sqrt(2.0), [0.0, 3.0]),
            [5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 1.0, 2.0, 0.5],
        ]
    )
    got, want = np.asarray(_log(x)), np.log(x)
    assert np.all(np.isfinite(got))
    ulps = np.abs(got - want) / np.spacing(np.abs(want))
    assert ulps.max() <= 3.0, x[np.argmax(ulps)]
    assert got[x == 1.0][0] == 0.0


def test_log_special_values_follow_numpy() -> None:
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -1.0, -1e300])
    with np.errstate(divide="ignore", invalid="ignore"):
        want = np.log(x)
    np.testing.assert_array_equal(np.asarray(_log(x)), want)
    # XLA:CPU flushes subnormals to zero in arithmetic and comparisons, so a negative
    # subnormal is -0 to it: -inf, as jnp.log gives (NumPy: NaN)
    assert np.asarray(_log(np.array([-5e-324])))[0] == -np.inf
