"""Each shock does exactly what its parameters say, on hand-checkable cases: a source of
constant returns (every generated return is 1 %), scheduled shocks, equity returns checked
value by value; random onsets against their stated probabilities; kernel vs reference."""

from __future__ import annotations

import numpy as np
import pytest

from compute.core.errors import SpecError
from compute.simulation import bootstrap, shocks
from compute.simulation import paths as simulate
from compute.simulation import reference as ref

KEY = 99
H = 12


def _equity_returns(
    spec: shocks.ShockSpec, src: np.ndarray | None = None, horizon: int = H, chunk: int = 1024
) -> np.ndarray:
    source = np.full(50, 0.01) if src is None else src
    layout = simulate.Layout("bootstrap", horizon, chunk, horizon, shocks=spec.flags())
    _, eq = simulate.paths_kernel(
        bootstrap.make_params(source, 5.0), spec.params(horizon), np.uint64(KEY), layout=layout
    )
    return np.asarray(eq)


def test_no_shock_is_the_source_return() -> None:
    np.testing.assert_array_equal(_equity_returns(shocks.ShockSpec()), 0.01)


def test_scheduled_gap_compounds_on_the_step() -> None:
    eq = _equity_returns(shocks.ShockSpec(gap_size=-0.2, gap_at=(3, 7)))
    want = np.full(H, 0.01)
    want[[3, 7]] = 1.01 * 0.8 - 1  # -0.192
    np.testing.assert_allclose(eq[0], want, rtol=0, atol=1e-15)
    assert (eq == eq[0]).all()


def test_vol_spike_multiplies_for_its_duration() -> None:
    eq = _equity_returns(shocks.ShockSpec(spike_mult=4.0, spike_len=3, spike_at=(2,)))
    want = np.full(H, 0.01)
    want[2:5] = 0.04
    np.testing.assert_allclose(eq[0], want, atol=1e-15)


def test_leverage_funding_squeeze_and_stress_costs() -> None:
    spec = shocks.ShockSpec(
        leverage=2.0,
        funding_rate=0.001,
        funding_len=2,
        funding_at=(5,),
        exposure=1.0,
        cost_per_turnover=0.002,
        turnover=0.5,
        stress=((8, 10),),
    )
    eq = _equity_returns(spec)
    want = np.full(H, 2 * 0.01)
    # squeeze at 5 and 6: funding 2 x 1 x 0.001 plus the stress cost 2 x 0.5 x 0.002
    want[5:7] = 0.02 - 0.002 - 0.002
    want[8:10] = 0.02 - 0.002  # explicit stress window: cost only
    np.testing.assert_allclose(eq[0], want, atol=1e-15)


def test_stress_costs_apply_during_spikes_and_gaps() -> None:
    spec = shocks.ShockSpec(
        gap_size=-0.1,
        gap_at=(1,),
        spike_mult=2.0,
        spike_len=2,
        spike_at=(4,),
        cost_per_turnover=0.01,
        turnover=1.0,
    )
    eq = _equity_returns(spec)
    want = np.full(H, 0.01)
    want[1] = 1.01 * 0.9 - 1 - 0.01
    want[4:6] = 0.02 - 0.01
    np.testing.assert_allclose(eq[0], want, atol=1e-15)


def test_liquidation_at_the_maintenance_threshold() -> None:
    # leverage 3, maintenance 5 %: liquidated when (1 + 3r) < 0.15 (1 + r), i.e. r < -0.2982
    spec = shocks.ShockSpec(
        leverage=3.0, maintenance_margin=0.05, liquidation_penalty=0.5, gap_size=-0.31, gap_at=(4,)
    )
    eq = _equity_returns(spec)
    r = 1.01 * 0.69 - 1  # -0.3031
    want = np.full(H, 0.03)
    want[4] = (1 + 3 * r) * 0.5 - 1  # what is left, minus the penalty
    want[5:] = 0.0  # flat after liquidation
    np.testing.assert_allclose(eq[0], want, atol=1e-15)
    # a gap that stays just above the threshold does not liquidate
    safe = shocks.ShockSpec(leverage=3.0, maintenance_margin=0.05, gap_size=-0.30, gap_at=(4,))
    r = 1.01 * 0.70 - 1  # -0.293 > -0.2982
    assert _equity_returns(safe)[0, 4] == pytest.approx(3 * r, abs=1e-15)
    assert _equity_returns(safe)[0, 5] == pytest.approx(0.03, abs=1e-15)


def test_equity_never_goes_below_zero() -> None:
    eq = _equity_returns(shocks.ShockSpec(leverage=10.0, gap_size=-0.5, gap_at=(0,)))
    assert eq[0, 0] == -1.0


@pytest.mark.parametrize(("field", "slot_value"), [("gap_prob", 0.1), ("spike_prob", 0.05)])
def test_random_onsets_happen_with_the_stated_probability(field: str, slot_value: float) -> None:
    kwargs = {field: slot_value}
    if field == "gap_prob":
        spec = shocks.ShockSpec(gap_size=0.5, **kwargs)  # type: ignore[arg-type]
        eq = _equity_returns(spec, horizon=200)
        freq = np.mean(eq > 0.1)
    else:
        spec = shocks.ShockSpec(spike_mult=3.0, spike_len=1, **kwargs)  # type: ignore[arg-type]
        eq = _equity_returns(spec, horizon=200)
        freq = np.mean(eq > 0.02)
    se = np.sqrt(slot_value * (1 - slot_value) / eq.size)
    assert abs(freq - slot_value) < 4 * se


def test_kernel_matches_reference_with_random_shocks() -> None:
    rng = np.random.default_rng(0)
    src = rng.normal(0.0, 0.05, 400)
    spec = shocks.ShockSpec(
        leverage=2.5,
        maintenance_margin=0.1,
        liquidation_penalty=0.2,
        gap_size=-0.15,
        gap_prob=0.01,
        spike_mult=3.0,
        spike_len=5,
        spike_prob=0.01,
        funding_rate=0.002,
        funding_len=4,
        funding_prob=0.02,
        cost_per_turnover=0.003,
        turnover=0.7,
        stress=((10, 20),),
    )
    layout = simulate.Layout("bootstrap", 60, 1024, 60, shocks=spec.flags())
    r, eq = simulate.paths_kernel(
        bootstrap.make_params(src, 6.0), spec.params(60), np.uint64(KEY), layout=layout
    )
    want_eq, _ = ref.apply_shocks(np.asarray(r), spec, KEY)
    np.testing.assert_allclose(np.asarray(eq), want_eq, rtol=1e-14, atol=1e-15)


def test_invalid_shocks_are_rejected_with_a_reason() -> None:
    with pytest.raises(SpecError, match="spike_len"):
        shocks.ShockSpec(spike_mult=2.0, spike_at=(3,))
    with pytest.raises(SpecError, match="leverage"):
        shocks.ShockSpec(leverage=0.0)
    with pytest.raises(SpecError, match="gap_at"):
        shocks.ShockSpec(gap_size=-0.1, gap_at=(20,)).params(10)
