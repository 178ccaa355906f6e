"""The redial rule: exponential back-off with jitter per key, forgotten on success."""

import random

import pytest

from protocol.policy.backoff import Backoff


def test_waits_double_up_to_the_cap_with_jitter_and_reset_on_success():
    b = Backoff(first=1.0, cap=30.0, rng=random.Random(7))
    assert b.due("coord", 0.0)  # never failed
    waits, now = [], 0.0
    for _ in range(8):
        wait = b.failed("coord", now)
        assert not b.due("coord", now + wait * 0.99) and b.due("coord", now + wait)
        waits.append(wait)
        now += wait
    nominal = [1, 2, 4, 8, 16, 30, 30, 30]
    assert all(0.5 * n <= w < 1.5 * n for w, n in zip(waits, nominal, strict=True))
    b.succeeded("coord")
    assert b.due("coord", now) and 0.5 <= b.failed("coord", now) < 1.5


def test_peers_started_together_drift_apart():
    rngs = [Backoff(rng=random.Random(seed)) for seed in range(100)]
    first = {round(b.failed("coord", 0.0), 3) for b in rngs}
    assert len(first) > 90  # not one synchronized redial


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        Backoff(first=0.0)
    with pytest.raises(ValueError):
        Backoff(first=5.0, cap=1.0)
