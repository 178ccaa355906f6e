"""Budgets for what a remote may spend: token buckets per key, and log lines per key.

Pure bookkeeping: callers pass the time in (monotonic seconds), so the rules
are tested without clocks and hold the same in the coordinator, the peer and
the benches. Memory is bounded by ``max_keys`` whatever a remote does: a
flood of fresh keys evicts the least recently used ones, and keys that could
be evicted this way are, at worst, given a fresh (full) budget again, so
callers that must hold a hard line against fresh keys also keep a budget
under a shared key (``"*"``: everyone together).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up. Starts full."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float):
        if rate < 0 or burst <= 0:
            raise ValueError("rate must be >= 0 and burst > 0")
        self.rate, self.burst = float(rate), float(burst)
        self.tokens, self.stamp = float(burst), now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if there are that many; False (and nothing spent) if not."""
        self._refill(now)
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def wait(self, now: float, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are there (0 when they are now)."""
        self._refill(now)
        if self.tokens >= cost:
            return 0.0
        return float("inf") if self.rate == 0 else (cost - self.tokens) / self.rate


class Buckets:
    """One :class:`TokenBucket` per key, the ``max_keys`` most recently used ones kept."""

    def __init__(self, rate: float, burst: float, *, max_keys: int = 65536):
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()

    def bucket(self, key: Hashable, now: float) -> TokenBucket:
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return b

    def take(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        return self.bucket(key, now).take(now, cost)

    def __len__(self) -> int:
        return len(self._buckets)


class LogLimiter:
    """At most one log line per key every ``interval`` seconds.

    ``allow(key, now)`` answers None while the key is muted, else how many lines
    were muted since its last line (0 the first time), so the line that does go
    out can say so: a peer that sends a million bad frames costs one line a
    minute, not a million (one WARNING per refusal filled 12 MB in one hostile
    run)."""

    def __init__(self, interval: float = 60.0, *, max_keys: int = 4096):
        self.interval, self.max_keys = interval, max_keys
        self._last: OrderedDict[Hashable, list] = OrderedDict()  # key -> [time, muted]

    def allow(self, key: Hashable, now: float) -> int | None:
        entry = self._last.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return None
        muted = entry[1] if entry is not None else 0
        self._last[key] = [now, 0]
        self._last.move_to_end(key)
        if len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        return muted
