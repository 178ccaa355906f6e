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


# --- bugs found by cross-checking with an outside library (issue 15) --------------------------

def _krum_exact(x: np.ndarray, f: int) -> int:
    """Krum's pick with distances taken as |a - b|^2 directly (slow, exact enough)."""
    n = x.shape[0]
    d = np.array([[np.sum((x[i] - x[j]) ** 2) for j in range(n)] for i in range(n)])
    np.fill_diagonal(d, np.inf)
    return int(np.argmin(np.sort(d, axis=1)[:, :n - f - 2].sum(axis=1)))


def test_krum_is_exact_on_inputs_that_share_a_large_offset():
    """|a|^2 + |b|^2 - 2ab loses the digits that tell 1e6 + 1e-3 N(0, 1) rows apart; centring
    first keeps them (before the fix Krum picked the wrong row in 36 of these 40)."""
    wrong = 0
    for seed in range(40):
        x = 1e6 + 1e-3 * np.random.default_rng(seed).normal(size=(9, 20))
        out = get_aggregator("krum")(x, f=2)
        wrong += not np.array_equal(out, x[_krum_exact(x, 2)])
    assert wrong == 0


@pytest.mark.parametrize("name", ["krum", "multi_krum"])
@pytest.mark.parametrize("n", [1, 2])
def test_krum_with_one_or_two_inputs_at_its_default_f(name, n):
    x = np.arange(3.0 * n).reshape(n, 3)
    out = get_aggregator(name)(x)  # tolerates nothing, but must not fail the round
    assert out.shape == (3,) and np.all(np.isfinite(out))
    if n == 1 or name == "multi_krum":
        assert np.allclose(out, x.mean(axis=0))


def _distance_sum(x: np.ndarray, z: np.ndarray) -> float:
    return float(np.linalg.norm(x - z, axis=1).sum())


def test_geometric_median_converges_on_inputs_that_share_a_large_offset():
    """The stopping rule was relative to |z|: at 1e6 it stopped at the coordinate-wise
    median, far from the minimiser at the scale of the inputs' spread."""
    rng = np.random.default_rng(3)
    spread = np.vstack([rng.normal(size=(7, 5)), rng.normal(size=(3, 5)) + 4.0])
    ref = get_aggregator("geometric_median")(spread, iters=5000, eps=1e-14)
    for offset in (0.0, 1e6):
        out = get_aggregator("geometric_median")(spread * 1e-3 + offset)
        assert _distance_sum(spread, (out - offset) * 1e3) <= \
            _distance_sum(spread, ref) * (1 + 1e-6), offset
    assert _distance_sum(spread, np.median(spread, axis=0)) > \
        _distance_sum(spread, ref) * (1 + 1e-3)  # the median is not already the answer


# --- pre-aggregators -------------------------------------------------------------------------

@settings(max_examples=100, deadline=None, derandomize=True)
@given(honest_and_byzantine())
def test_pre_aggregated_robust_rules_stay_bounded(case):
    honest, byz, f = case
    x = np.vstack([honest, byz])
    center = honest.mean(axis=0)
    diameter = max(np.linalg.norm(honest - center, axis=1).max(), 1e-9)
    for name in ("nnm+trimmed_mean", "arc+nnm+median", "nnm+krum", "arc+geometric_median"):
        out = get_aggregator(name)(x, f=f)
        assert np.linalg.norm(out - center) <= 4 * diameter * np.sqrt(x.shape[1]) + 1e-6, name


def test_nnm_bucketing_and_arc_do_what_their_papers_say():
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [100.0, 100.0]])
    from protocol.learning.aggregators import arc, bucketing, nnm

    assert np.allclose(get_aggregator("nnm+mean")(x, f=1), nnm(x, f=1).mean(axis=0))

    # nnm, f=1: each row becomes the mean of its 3 nearest rows (itself included)
    assert np.allclose(nnm(x, f=1)[0], x[:3].mean(axis=0))
    assert np.allclose(nnm(x, f=1)[3], x[[3, 1, 2]].mean(axis=0))
    # bucketing: a permutation fixed by the seed, then means of s rows
    b = bucketing(x, s=2, seed=7)
    assert b.shape == (2, 2) and np.allclose(b.mean(axis=0), x.mean(axis=0))
    assert np.array_equal(b, bucketing(x, s=2, seed=7))
    # arc, f=1, n=4: k = floor(2 * 1/4 * 3) = 1: the largest row clipped to the next norm
    clipped = arc(x, f=1)
    assert np.allclose(clipped[:3], x[:3])
    assert np.isclose(np.linalg.norm(clipped[3]), 1.0)
    with pytest.raises(ValueError, match="pre-aggregators"):
        get_aggregator("mix+mean")
    with pytest.raises(ValueError, match="unknown aggregator"):
        get_aggregator("nnm+nnm")  # a pre-aggregator is no rule
