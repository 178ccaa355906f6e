"""The cyclic garbage collector, paced for daemons that run for days.

CPython's collector walks every object it tracks at each full (oldest-generation)
collection, and starts one whenever the objects promoted into that generation since the
last full one outnumber a quarter of those it kept then. A coordinator keeps state for
every connected peer for as long as the peer stays (connections, sessions, pubsub and
peerstore entries), and a round promotes many short-lived objects (each one alive across
a younger collection): at N=1,000 SecAgg+ peers, one round started six full walks of a
~590 MB heap, 0.55 s each, **3.3 s of the round's ~19 s of coordinator CPU**, against
0.04 s a round at N=100 (``scripts/bench/scale.py --task-profile``, which times the
collector): the largest cost per peer that grew with N.

:func:`settle` runs one full collection and then freezes what survived
(:func:`gc.freeze`): later collections, full ones included, walk only the objects made
since. Daemons call it when they have started and after each round they see end; it runs
at most once every :data:`SETTLE_EVERY` seconds per process (a bench process holds
hundreds of peers, which must not each collect), and skips the rest. A frozen object that
becomes cyclic garbage is reclaimed at the next settle, which unfreezes everything first:
what can wait for it is what one interval leaves, never more. Objects freed by reference
counting (most of them) are freed at once, frozen or not.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger("hypergossip.gc")

SETTLE_EVERY = 60.0  # s between two settles in one process, at least

_last = [float("-inf")]  # monotonic time of this process's last settle


def settle(*, force: bool = False) -> float | None:
    """Collect everything, then freeze the survivors; the seconds it took, or None when the
    process settled less than :data:`SETTLE_EVERY` seconds ago (and ``force`` is off).
    It blocks the caller's thread for that long (about 0.5 s for a coordinator of 1,000
    peers): call it between rounds."""
    now = time.monotonic()
    if not force and now - _last[0] < SETTLE_EVERY:
        return None
    started = time.perf_counter()
    gc.unfreeze()  # last time's survivors are walked once more: their cycles are freed now
    found = gc.collect()
    gc.freeze()
    _last[0] = time.monotonic()
    took = time.perf_counter() - started
    log.debug("settled the heap: %d unreachable objects freed, %d frozen, in %.3f s", found,
              gc.get_freeze_count(), took)
    return took


def reset() -> None:
    """Forget the last settle (tests), and unfreeze."""
    _last[0] = float("-inf")
    gc.unfreeze()
