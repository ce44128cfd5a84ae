"""The simulator on a thread of its own, for blocking callers (tests, the CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from spikewatch.replay.sim_faults import SimulatorStats

if TYPE_CHECKING:
    from spikewatch.replay.simulator import Simulator

T = TypeVar("T")


class SimulatorThread:
    """Runs a :class:`Simulator` on its own event loop thread, for blocking callers."""

    def __init__(self, simulator: Simulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.simulator = simulator
        self._host, self._port = host, port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    def start(self) -> int:
        """Start the thread and the server; returns the port."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            self.simulator.start(self._host, self._port), self._loop
        )
        self.port = future.result(10)
        return self.port

    @property
    def ws_url(self) -> str:
        """Base URL for ``--ws-url``."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def rest_url(self) -> str:
        """Base URL for ``--rest-url``."""
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> SimulatorStats:
        """The simulator's counters (read on its loop)."""
        future = asyncio.run_coroutine_threadsafe(self._stats(), self._loop)
        return future.result(10)

    async def _stats(self) -> SimulatorStats:
        return self.simulator.stats()

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` run on the simulator's loop; its result, or its exception."""

        async def call() -> T:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(10)

    def list_symbol(self, symbol: str, like: str | None = None) -> None:
        """:meth:`Simulator.list_symbol` from any thread."""
        self._call(self.simulator.list_symbol, symbol, like)

    def delist(self, symbol: str) -> None:
        """:meth:`Simulator.delist` from any thread."""
        self._call(self.simulator.delist, symbol)

    def halt(self, symbol: str) -> None:
        """:meth:`Simulator.halt` from any thread."""
        self._call(self.simulator.halt, symbol)

    def wait_done(self, timeout: float) -> bool:
        """Wait until the whole tape has played."""
        future = asyncio.run_coroutine_threadsafe(self.simulator.done.wait(), self._loop)
        try:
            future.result(timeout)
        except TimeoutError:
            future.cancel()
            return False
        return True

    def stop(self) -> None:
        """Stop the server and the thread."""
        if self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self.simulator.stop(), self._loop)
            with contextlib.suppress(Exception):
                future.result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()
