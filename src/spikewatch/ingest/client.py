"""The reconnecting WebSocket client: backoff, pings, rotation without a gap.

Exchange-agnostic: it hands every frame with its local receive time to a handler and
learns from the handler's answer when the server announced a shutdown. The handler runs
on the event loop, so frames reach it one at a time and in order.

Rotation (before the server's 24-hour cut-off, or on a shutdown notice): the new
connection is opened first; its frames are held back while the old one goes on for a short
overlap; then the old one is closed and the held frames are handed over. The handler drops
trades it has already seen (by trade id), so nothing is lost or doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Literal

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidURI

from spikewatch.ingest.backoff import Backoff

log = logging.getLogger(__name__)

FrameHandler = Callable[[bytes, int], bool]
"""``handler(frame, recv_time_ns) -> rotate?``: True asks for a new connection."""

State = Literal["starting", "connecting", "connected", "waiting", "stopped"]

#: Frames the server may send at most (bytes); a bigger one closes the connection.
MAX_FRAME_BYTES = 1 << 20


class ClientStatus(msgspec.Struct, frozen=True):
    """An immutable view of the client, replaced on every change of state."""

    url: str
    state: State = "starting"
    connections: int = 0  # connections opened, rotations included
    reconnects: int = 0  # connections opened after one was lost
    rotations: int = 0
    failed_attempts: int = 0
    last_error: str | None = None
    connected_since: float | None = None  # wall-clock seconds
    next_attempt_in: float | None = None  # seconds, while waiting to reconnect
    oversized_frames: int = 0  # frames over MAX_FRAME_BYTES (each costs a reconnect)


class _Frame(msgspec.Struct):
    gen: int
    data: bytes
    recv_ns: int


class _Closed(msgspec.Struct):
    gen: int
    reason: str


class _RotateDue(msgspec.Struct):
    pass


class _Switch(msgspec.Struct):
    gen: int


class _Stop(msgspec.Struct):
    pass


_Item = _Frame | _Closed | _RotateDue | _Switch | _Stop


class StreamClient:
    """Keeps one live connection to ``url`` and hands its frames to ``handler``."""

    def __init__(
        self,
        url: str,
        handler: FrameHandler,
        *,
        rotate_after: float = 23.5 * 3600,
        backoff: Backoff | None = None,
        stable_after: float = 10.0,
        overlap: float = 1.0,
        open_timeout: float = 10.0,
        ping_interval: float = 20.0,
        queue_size: int = 10_000,
        on_connect: Callable[[bool], None] | None = None,
    ) -> None:
        self.url = url
        self._handler = handler
        # called on the loop when a connection opens; True after a lost one (not rotations)
        self._on_connect = on_connect
        self._rotate_after = rotate_after
        self._backoff = backoff or Backoff()
        self._stable_after = stable_after
        self._overlap = overlap
        self._open_timeout = open_timeout
        self._ping_interval = ping_interval
        # Bounded: when full, readers wait, so TCP pushes back on the server; nothing is
        # dropped, and the lag shows in the receive-time metrics.
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=queue_size)
        self._stopping = False
        self._rotate = asyncio.Event()  # set: open a successor connection
        self._wake = asyncio.Event()  # set: stop sleeping, we are stopping
        self.status = ClientStatus(url=url)

    def _set(self, **changes: object) -> None:
        self.status = msgspec.structs.replace(self.status, **changes)

    def stop(self) -> None:
        """Ask :meth:`run` to return soon (call on the loop's thread)."""
        self._stopping = True
        self._wake.set()
        self._rotate.set()
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(_Stop())

    def request_rotation(self) -> None:
        """Open a fresh connection and retire the current one without a gap."""
        self._rotate.set()

    async def run(self) -> None:
        """Connect, reconnect on any loss, rotate when due, until :meth:`stop`."""
        lost = False
        while not self._stopping:
            ws = await self._connect_with_backoff(lost)
            if ws is None:
                break
            lost = await self._session(ws)
        self._set(state="stopped", connected_since=None, next_attempt_in=None)

    async def _open(self) -> ClientConnection:
        return await connect(
            self.url,
            open_timeout=self._open_timeout,
            ping_interval=self._ping_interval,
            ping_timeout=self._ping_interval,
            close_timeout=2,
            max_size=MAX_FRAME_BYTES,
            max_queue=256,
            proxy=None,
        )

    async def _connect_with_backoff(self, reconnect: bool) -> ClientConnection | None:
        while not self._stopping:
            self._set(state="connecting", next_attempt_in=None)
            try:
                ws = await self._open()
            except InvalidURI:
                raise
            except Exception as exc:  # DNS, refused, TLS, handshake, timeout: all retried
                delay = self._backoff.next_delay()
                error = f"{type(exc).__name__}: {exc}"
                log.warning("connect to %s failed (%s); retrying in %.2fs", self.url, error, delay)
                self._set(
                    state="waiting",
                    failed_attempts=self.status.failed_attempts + 1,
                    last_error=error,
                    next_attempt_in=delay,
                )
                await self._sleep(delay)
                continue
            self._set(
                state="connected",
                connections=self.status.connections + 1,
                reconnects=self.status.reconnects + (1 if reconnect else 0),
                connected_since=time.time(),
                next_attempt_in=None,
            )
            log.info("connected to %s", self.url)
            if self._on_connect is not None:
                self._on_connect(reconnect)
            return ws
        return None

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when stopped."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    async def _reader(self, ws: ClientConnection, gen: int) -> None:
        put = self._queue.put
        reason = "closed"
        try:
            while True:
                data = await ws.recv(decode=False)
                if isinstance(data, str):  # pragma: no cover - decode=False gives bytes
                    data = data.encode()
                await put(_Frame(gen, data, time.time_ns()))
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else "no close frame"
            reason = f"connection closed ({code})"
            if exc.sent is not None and exc.sent.code == 1009:  # we refused a huge frame
                reason = f"a frame over {MAX_FRAME_BYTES} bytes; connection closed"
                self._set(oversized_frames=self.status.oversized_frames + 1)
        except Exception as exc:  # a reader must always report how it ended
            reason = f"{type(exc).__name__}: {exc}"
        await put(_Closed(gen, reason))

    async def _rotation_timer(self) -> None:
        """Post a rotation request when the connection is old or a rotation was asked for."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._rotate.wait(), timeout=self._rotate_after)
        self._rotate.clear()
        if not self._stopping:
            await self._queue.put(_RotateDue())

    async def _switch_later(self, gen: int) -> None:
        await asyncio.sleep(self._overlap)
        await self._queue.put(_Switch(gen))

    async def _session(self, ws: ClientConnection) -> bool:
        """Serve one connection and its rotations; True when the connection was lost."""
        loop = asyncio.get_running_loop()
        gen = 0
        conns = {gen: ws}
        tasks: dict[int, asyncio.Task[None]] = {gen: asyncio.create_task(self._reader(ws, gen))}
        opened = loop.time()
        pending: int | None = None
        held: list[_Frame] = []
        self._rotate.clear()
        timers = {asyncio.create_task(self._rotation_timer())}
        handler, queue = self._handler, self._queue
        try:
            while True:
                item = await queue.get()
                if self._stopping:  # also when the queue was too full to take the _Stop
                    return False
                if type(item) is _Frame:
                    if item.gen == gen:
                        if handler(item.data, item.recv_ns):
                            log.info("%s announced a shutdown; rotating", self.url)
                            self._rotate.set()
                    elif item.gen == pending:
                        held.append(item)
                    # frames of a retired connection are dropped: its successor has them
                elif isinstance(item, _Stop):
                    return False
                elif isinstance(item, _RotateDue):
                    if pending is None:
                        new = await self._open_successor()
                        if new is None:  # try again shortly; the old connection still works
                            timers.add(asyncio.create_task(self._retry_rotation()))
                            continue
                        pending = gen + 1
                        conns[pending] = new
                        tasks[pending] = asyncio.create_task(self._reader(new, pending))
                        timers.add(asyncio.create_task(self._switch_later(pending)))
                elif (isinstance(item, _Switch) and item.gen == pending) or (
                    isinstance(item, _Closed) and item.gen == gen and pending is not None
                ):
                    old, gen, pending = gen, pending, None
                    await self._retire(conns.pop(old), tasks.pop(old))
                    for frame in held:
                        handler(frame.data, frame.recv_ns)
                    held.clear()
                    self._set(rotations=self.status.rotations + 1, connected_since=time.time())
                    opened = loop.time()
                    timers.add(asyncio.create_task(self._rotation_timer()))
                elif isinstance(item, _Closed) and item.gen == gen:
                    log.warning("lost connection to %s: %s", self.url, item.reason)
                    if loop.time() - opened >= self._stable_after:
                        self._backoff.reset()
                    delay = self._backoff.next_delay()
                    self._set(
                        state="waiting",
                        last_error=item.reason,
                        connected_since=None,
                        next_attempt_in=delay,
                    )
                    await self._sleep(delay)
                    return True
                elif isinstance(item, _Closed) and item.gen in conns:  # a successor failed
                    pending = None
                    held.clear()
                    await self._retire(conns.pop(item.gen), tasks.pop(item.gen))
                    timers.add(asyncio.create_task(self._retry_rotation()))
                timers = {t for t in timers if not t.done()}
        finally:
            for timer in timers:
                timer.cancel()
            for gen_, conn in list(conns.items()):
                await self._retire(conn, tasks[gen_])

    async def _retry_rotation(self) -> None:
        await asyncio.sleep(self._backoff.next_delay())
        await self._queue.put(_RotateDue())

    async def _open_successor(self) -> ClientConnection | None:
        try:
            ws = await self._open()
        except Exception as exc:
            log.warning("could not open a successor connection to %s: %s", self.url, exc)
            self._set(last_error=f"{type(exc).__name__}: {exc}")
            return None
        self._set(connections=self.status.connections + 1)
        return ws

    @staticmethod
    async def _retire(ws: ClientConnection, reader: asyncio.Task[None]) -> None:
        reader.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await ws.close()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await reader
