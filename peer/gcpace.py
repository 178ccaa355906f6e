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

:func:`settle` runs one collection and then freezes what survived (:func:`gc.freeze`):
later collections, full ones included, walk only the objects made since. Daemons call it
when they have started and after each round they see end; it runs at most once every
:data:`SETTLE_EVERY` seconds per process (a bench process holds hundreds of peers, which
must not each collect), and skips the rest. Most settles walk only what is not frozen yet;
one every :data:`FULL_EVERY` seconds unfreezes everything first, so a frozen object that
became cyclic garbage (a departed peer's connection) is reclaimed then: what waits for it
is what that interval leaves, never more. Objects freed by reference counting (most of
them) are freed at once, frozen or not. (Unfreezing at every settle walked the whole heap
once a round: 0.55 s a round at a coordinator of 1,000 SecAgg+ peers.)

:func:`pace` sizes the youngest generation (:data:`YOUNG`): CPython collects it after
every 700 net new container objects, and an object alive across one of those and then a
middle one is promoted to the oldest generation, whose collections walk everything
promoted since the last settle. A coordinator with a message in flight from each of
1,000 peers allocates far more than 700 objects while any one of them is handled, so
what lives for one message was promoted, and at N=1,000 SecAgg+ the collector took 2.6 s
of a round's coordinator CPU (569 young, 51 middle and 4 full collections besides the
settle), against 0.07 s at N=100: what a task step costs there nearly doubled. With
:data:`YOUNG` new objects between young collections it took only the settle's
(``scripts/bench/scale.py --task-profile``). Non-cyclic garbage is freed by reference
counting either way; cyclic garbage may wait for one young collection, at most
:data:`YOUNG` objects.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger("hypergossip.gc")

SETTLE_EVERY = 60.0  # s between two settles in one process, at least
FULL_EVERY = 600.0  # s between two settles that unfreeze (walk the whole heap), at least
YOUNG = 50_000  # net new container objects between two young collections (CPython: 700)

_last = [float("-inf")]  # monotonic time of this process's last settle
_last_full = [float("-inf")]  # and of its last full one


def pace() -> None:
    """Size the collector's youngest generation for a daemon (see the module's notes);
    the older generations keep CPython's thresholds. Idempotent."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG, middle, old)


def settle(*, force: bool = False) -> float | None:
    """Collect, then freeze the survivors; the seconds it took, or None when the process
    settled less than :data:`SETTLE_EVERY` seconds ago (and ``force`` is off). Every
    :data:`FULL_EVERY` seconds (or with ``force``) it unfreezes first and walks the whole
    heap, which blocks the caller's thread for longer (about 0.5 s for a coordinator of
    1,000 peers): call it between rounds."""
    now = time.monotonic()
    if not force and now - _last[0] < SETTLE_EVERY:
        return None
    started = time.perf_counter()
    full = force or now - _last_full[0] >= FULL_EVERY
    if full:  # the frozen objects are walked once more: their cycles are freed now
        gc.unfreeze()
        _last_full[0] = now
    found = gc.collect()
    gc.freeze()
    _last[0] = time.monotonic()
    took = time.perf_counter() - started
    log.debug("settled the heap%s: %d unreachable objects freed, %d frozen, in %.3f s",
              " (in full)" if full else "", found, gc.get_freeze_count(), took)
    return took


def reset() -> None:
    """Forget the last settles (tests), and unfreeze."""
    _last[0] = _last_full[0] = float("-inf")
    gc.unfreeze()
