"""CPython's cyclic garbage collector, kept off the request path of a long-running app.

A full collection walks every container object the process holds, with the GIL held.
Watching the whole market, the engine holds about 150,000 long-lived ones (each of 2,000
symbols has its state, detectors, guard, sequencer and bars); at 20,000 trades/s the
collector ran a full walk every 6 s or so and each took 80-120 ms of CPU (measured with
``gc.callbacks`` in the live app): every web request and live push waiting for the GIL
then waited that long, which was most of ``/api/get_signal``'s p99. The walks found
nothing: in steady state the app makes no cyclic garbage (no generation collected a
single object over minutes of that load).

So every :data:`FREEZE_EVERY_S` the objects that have lived through a young collection
are frozen (``gc.freeze``: moved out of the generations the collector walks; a frozen
object is still freed by reference counting the moment it is dropped, as every object of
this app is). The young generations are collected as before. Once every
:data:`FULL_EVERY_S` everything is unfrozen and collected in full (one such pause an
hour), so that a cycle made by something rare (a reconnect, an error's traceback) is
reclaimed within the hour rather than kept for the process's life.
"""

from __future__ import annotations

import gc
import threading
import time

#: Seconds between freezes of what survived the young collections.
FREEZE_EVERY_S = 10.0
#: Seconds between full collections (everything unfrozen first).
FULL_EVERY_S = 3600.0


class GcFreezer:
    """Freezes survivors every ``every`` s and collects in full every ``full_every`` s,
    on its own thread; start once, stop once (stopping unfreezes)."""

    def __init__(self, every: float = FREEZE_EVERY_S, full_every: float = FULL_EVERY_S) -> None:
        self.every = every
        self.full_every = full_every
        self.full_collections = 0  # full collections run (each unfreezes first)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (its first freeze comes after ``every`` seconds)."""
        self._thread = threading.Thread(target=self._run, name="spikewatch-gc", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread and hand every frozen object back to the collector."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        gc.unfreeze()

    def _run(self) -> None:
        last_full = time.monotonic()
        while not self._stop.wait(self.every):
            if time.monotonic() - last_full >= self.full_every:
                gc.unfreeze()
                gc.collect()
                self.full_collections += 1
                last_full = time.monotonic()
            else:
                # young cycles first: what is frozen is only what outlived them
                gc.collect(1)
            gc.freeze()
