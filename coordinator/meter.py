"""Where the coordinator's own CPU goes: the seam benchmarks measure through.

The coordinator's collaborators run each unit of their work (one message taken in,
one pull answered, a round opened, a phase closed, a notice or a result sealed and
sent) inside ``meter.timed(kind, round)``. :class:`Meter` does nothing; a bench
passes :class:`CpuMeter`, which adds up the thread CPU time of each kind and of each
round. libp2p's transport work (Noise, yamux, gossipsub) is not in it: it runs in
tasks shared with everything else in the process.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext


class Meter:
    """No measurement (production): a shared no-op context, nothing allocated per use."""

    def timed(self, kind: str, round: int | None = None) -> AbstractContextManager[None]:
        return _NOTHING


_NOTHING = nullcontext()


class CpuMeter(Meter):
    """Thread CPU seconds by kind and by round (work with no round counts to the round
    open at the time: from its opening to its publishing). Units of work never await, so
    nothing else runs in between."""

    def __init__(self) -> None:
        self.by_kind: dict[str, float] = defaultdict(float)
        self.by_round: dict[int, float] = defaultdict(float)
        self.current: int | None = None

    @contextmanager  # type: ignore[override]
    def timed(self, kind: str, round: int | None = None) -> Iterator[None]:
        t0 = time.thread_time()
        try:
            yield
        finally:
            spent = time.thread_time() - t0
            self.by_kind[kind] += spent
            if kind == "open" and round is not None:
                self.current = round
            r = round if round is not None else self.current
            if r is not None:
                self.by_round[r] += spent
            if kind == "publish":
                self.current = None  # what comes before the next round opens counts nowhere
