"""peer.gcpace: what a settle freezes stays out of the collector's walks until the next
settle, which frees the cycles among it; settles are paced per process."""

from __future__ import annotations

import gc
import weakref

from peer import gcpace


class Node:
    other: Node


def test_a_frozen_cycle_is_freed_at_the_next_settle_and_settles_are_paced():
    gcpace.reset()
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle: reference counting alone never frees it
        gone = weakref.ref(a)
        assert gcpace.settle() is not None  # the process's first settle runs
        assert gc.get_freeze_count() > 0
        del a, b
        gc.collect()
        assert gone() is not None  # frozen: no collection walks it, full ones included
        assert gcpace.settle() is None  # too soon after the last: skipped
        assert gone() is not None
        assert gcpace.settle(force=True) is not None
        assert gone() is None  # unfrozen, walked and freed
    finally:
        gcpace.reset()
