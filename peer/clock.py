"""The daemons' trio clock: timers that expire together (timer slack).

An idle peer's event loop is woken mostly by timers: gossipsub's heartbeat, yamux's
pings and sweeps on every connection, our own redial and pull checks. Each wake that
stands alone costs a whole pass of the scheduler and a sleep and wake of the thread in
the kernel: about 200 µs on this project's (virtual) machines, against 46 µs for a wake
that shares its pass with others (``scripts/bench/scale.py --task-profile`` showed the
run loop itself, not the tasks, as the largest part of an idle peer's CPU).

:class:`SlackClock` is trio's system clock with one change: the loop sleeps until the
next multiple of ``slack`` at or after the earliest deadline, so every timer due in the
same ``slack`` window expires in one pass, as Linux's timer slack and other systems'
timer coalescing do. A timer may fire up to ``slack`` late, never early; I/O wakes the
loop at once as before. Our timeouts are seconds long, and 50 ms is a small fraction of
any of them.
"""

from __future__ import annotations

import math
import random
import time

from trio.abc import Clock

TIMER_SLACK = 0.05  # s


class SlackClock(Clock):
    """trio's ``SystemClock``, whose sleeps end on a grid of ``slack`` seconds."""

    def __init__(self, slack: float = TIMER_SLACK):
        if not slack > 0:
            raise ValueError("slack must be positive")
        self.slack = slack
        # as trio's own clock: a large random offset, so that code comparing this clock
        # with time.perf_counter() by mistake fails at once
        self.offset = random.uniform(10_000, 200_000)

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return self.offset + time.perf_counter()

    def deadline_to_sleep_time(self, deadline: float) -> float:
        now = self.current_time()
        if deadline <= now:
            return 0.0
        if math.isinf(deadline):
            return deadline
        return math.ceil(deadline / self.slack) * self.slack - now
