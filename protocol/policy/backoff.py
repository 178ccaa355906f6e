"""When to try again: exponential back-off with jitter, per key.

A thousand peers that lose their coordinator together must not redial it together
every few seconds: each key (a peer to dial) waits ``first`` seconds after its first
failure, twice as long after each further one up to ``cap``, every wait drawn from
[0.5, 1.5) of its nominal value so that peers started together drift apart. A success
forgets the key. Pure bookkeeping: the caller passes the time in and owns the
randomness (``rng``), so the rule is tested without clocks.
"""

from __future__ import annotations

import random
from collections.abc import Hashable


class Backoff:
    def __init__(self, first: float = 1.0, cap: float = 30.0,
                 rng: random.Random | None = None):
        if not 0 < first <= cap:
            raise ValueError("need 0 < first <= cap")
        self.first, self.cap = first, cap
        self._rng = rng or random.Random()
        self._state: dict[Hashable, tuple[float, float]] = {}  # key -> (next try, wait)

    def due(self, key: Hashable, now: float) -> bool:
        """May ``key`` be tried at ``now``? (A key that never failed always may.)"""
        state = self._state.get(key)
        return state is None or now >= state[0]

    def failed(self, key: Hashable, now: float) -> float:
        """Record a failure of ``key`` at ``now``; returns the wait until it is due."""
        state = self._state.get(key)
        wait = self.first if state is None else min(state[1] * 2, self.cap)
        jittered = wait * self._rng.uniform(0.5, 1.5)
        self._state[key] = (now + jittered, wait)
        return jittered

    def succeeded(self, key: Hashable) -> None:
        self._state.pop(key, None)
