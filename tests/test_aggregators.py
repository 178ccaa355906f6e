"""Robust aggregators: properties that must hold with fewer than half the inputs arbitrary."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.learning.aggregators import AGGREGATORS, get_aggregator

ROBUST = ["median", "trimmed_mean", "krum", "multi_krum", "geometric_median",
          "centered_clipping"]


@st.composite
def honest_and_byzantine(draw):
    n = draw(st.integers(5, 15))
    f = draw(st.integers(0, (n - 3) // 2))  # fewer than half, and Krum's n > 2f + 2
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31))
    scale = draw(st.sampled_from([1.0, 1e3, 1e6]))
    rng = np.random.default_rng(seed)
    honest = rng.normal(0.0, 1.0, (n - f, d))
    byz = rng.normal(0.0, 1.0, (f, d)) * scale + scale  # arbitrary, possibly huge
    return honest, byz, f


@settings(max_examples=200, deadline=None, derandomize=True)  # bounds, not exact laws: fixed cases
@given(honest_and_byzantine())
def test_median_and_trimmed_mean_stay_in_the_honest_range(case):
    honest, byz, f = case
    x = np.vstack([honest, byz])
    lo, hi = honest.min(axis=0), honest.max(axis=0)
    for name, kw in (("median", {}), ("trimmed_mean", {"f": f})):
        out = get_aggregator(name)(x, **kw)
        assert np.all(out >= lo - 1e-9) and np.all(out <= hi + 1e-9), name


@settings(max_examples=200, deadline=None, derandomize=True)  # bounds, not exact laws: fixed cases
@given(honest_and_byzantine())
def test_krum_picks_an_honest_input(case):
    honest, byz, f = case
    x = np.vstack([honest, byz])
    out = get_aggregator("krum")(x, f=f)
    if f and np.min(np.abs(byz)) > 100:  # clearly separated attackers
        assert any(np.array_equal(out, h) for h in honest)


@settings(max_examples=200, deadline=None, derandomize=True)  # bounds, not exact laws: fixed cases
@given(honest_and_byzantine())
def test_robust_aggregators_are_bounded_by_the_honest_spread(case):
    """With huge outliers, every robust rule stays within a few honest diameters of the
    honest mean (the plain mean does not)."""
    honest, byz, f = case
    x = np.vstack([honest, byz])
    center = honest.mean(axis=0)
    diameter = max(np.linalg.norm(honest - center, axis=1).max(), 1e-9)
    for name in ROBUST:
        kw = {"f": f} if name in ("trimmed_mean", "krum", "multi_krum") else {}
        out = get_aggregator(name)(x, **kw)
        assert np.linalg.norm(out - center) <= 4 * diameter * np.sqrt(x.shape[1]) + 1e-6, name


def test_mean_is_not_robust_and_everything_agrees_without_attackers():
    rng = np.random.default_rng(0)
    honest = rng.normal(0, 1, (9, 4))
    attacked = np.vstack([honest, np.full((1, 4), 1e9)])
    assert np.linalg.norm(get_aggregator("mean")(attacked)) > 1e7
    same = np.tile(np.arange(4.0), (7, 1))
    for name, fn in AGGREGATORS.items():
        assert np.allclose(fn(same), np.arange(4.0)), name


def test_geometric_median_of_a_line_is_its_middle_point():
    x = np.array([[0.0], [1.0], [2.0], [100.0], [3.0]])
    assert np.allclose(get_aggregator("geometric_median")(x), [2.0], atol=1e-5)


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_bad_inputs_are_refused(name):
    fn = get_aggregator(name)
    with pytest.raises(ValueError):
        fn(np.array([1.0, 2.0]))  # not (n, d)
    with pytest.raises(ValueError):
        fn(np.array([[np.nan, 1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]))


def test_unknown_name_and_parameter_limits():
    with pytest.raises(ValueError, match="unknown aggregator"):
        get_aggregator("average-ish")
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match="n > 2f"):
        get_aggregator("trimmed_mean")(x, f=2)
    with pytest.raises(ValueError, match="n > f \\+ 2"):
        get_aggregator("krum")(x, f=2)
