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
from contextlib import AbstractContextManager, nullcontext


class Meter:
    """No measurement (production): a shared no-op context, nothing allocated per use."""

    def timed(self, kind: str, round: int | None = None) -> AbstractContextManager[None]:
        return _NOTHING


_NOTHING = nullcontext()


class CpuMeter(Meter):
    """Thread CPU seconds by kind and by round (work with no round counts to the round
    open at the time: from its opening to its publishing). Units of work never await, so
    nothing else runs in between. Each unit costs two ``time.thread_time`` calls and one
    small object (a generator-based context manager cost the intake path a tenth more
    than the work it measured)."""

    def __init__(self) -> None:
        self.by_kind: dict[str, float] = defaultdict(float)
        self.by_round: dict[int, float] = defaultdict(float)
        self.current: int | None = None

    def timed(self, kind: str, round: int | None = None) -> _Span:
        return _Span(self, kind, round)


class _Span:
    __slots__ = ("meter", "kind", "round", "t0")

    def __init__(self, meter: CpuMeter, kind: str, round: int | None):
        self.meter, self.kind, self.round = meter, kind, round

    def __enter__(self) -> None:
        self.t0 = time.thread_time()

    def __exit__(self, *exc: object) -> None:
        spent = time.thread_time() - self.t0
        m = self.meter
        m.by_kind[self.kind] += spent
        if self.kind == "open" and self.round is not None:
            m.current = self.round
        r = self.round if self.round is not None else m.current
        if r is not None:
            m.by_round[r] += spent
        if self.kind == "publish":
            m.current = None  # what comes before the next round opens counts nowhere
