"""The app's collector policy: long-lived objects are frozen out of the collector's walks,
still freed when dropped, and a frozen cycle is reclaimed by the periodic full collection."""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Callable

from spikewatch.gcfreeze import GcFreezer


class Node:
    """A container object the collector tracks (and a weak reference can watch)."""

    def __init__(self) -> None:
        self.other: Node | None = None


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def walked(watch: weakref.ref[Node]) -> bool:
    """Whether the collector's generations hold the watched object (False once frozen)."""
    target = watch()
    return any(o is target for o in gc.get_objects())


def test_survivors_are_frozen_and_still_freed_when_dropped() -> None:
    freezer = GcFreezer(every=0.02, full_every=3600)
    kept = Node()
    watch = weakref.ref(kept)
    freezer.start()
    try:
        assert wait_for(lambda: gc.get_freeze_count() > 0)
        assert wait_for(lambda: not walked(watch))
        del kept  # frozen, but reference counting frees it at once
        assert watch() is None
    finally:
        freezer.stop()
    assert gc.get_freeze_count() == 0  # stopping hands everything back


def test_a_frozen_cycle_is_reclaimed_by_the_full_collection() -> None:
    freezer = GcFreezer(every=0.02, full_every=0.2)
    a, b = Node(), Node()
    a.other, b.other = b, a
    watch = weakref.ref(a)
    freezer.start()
    try:
        assert wait_for(lambda: not walked(watch))  # frozen
        del a, b  # a cycle: reference counting alone never frees it
        assert wait_for(lambda: watch() is None)
        assert wait_for(lambda: freezer.full_collections >= 1)
    finally:
        freezer.stop()
