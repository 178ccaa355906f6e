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


def test_a_paced_settle_walks_only_the_unfrozen_until_a_full_one_is_due():
    gcpace.reset()
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a
        frozen = weakref.ref(a)
        assert gcpace.settle() is not None  # the first settle is a full one
        del a, b
        c, d = Node(), Node()
        c.other, d.other = d, c
        young = weakref.ref(c)
        del c, d
        gcpace._last[0] -= gcpace.SETTLE_EVERY  # a settle is due, a full one is not
        assert gcpace.settle() is not None
        assert young() is None  # made since the last settle: walked and freed
        assert frozen() is not None  # frozen: waits for the next full settle
        gcpace._last[0] -= gcpace.SETTLE_EVERY
        gcpace._last_full[0] -= gcpace.FULL_EVERY  # now a full one is due
        assert gcpace.settle() is not None
        assert frozen() is None
    finally:
        gcpace.reset()


def test_pace_sizes_the_young_generation_and_keeps_the_older_thresholds():
    before = gc.get_threshold()
    try:
        gcpace.pace()
        assert gc.get_threshold() == (gcpace.YOUNG, before[1], before[2])
    finally:
        gc.set_threshold(*before)
