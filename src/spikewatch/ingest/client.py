"""The reconnecting WebSocket client: backoff, pings, rotation without a gap.

Exchange-agnostic: it hands the frames of each network read, with their local receive
time, to a handler, and learns from the handler's answer when the server announced a
shutdown. The handler runs on the event loop, inside the read: frames reach it in order,
with no queue or task switch in between, and the socket is not read again until it
returns (so a slow handler pushes back on the server through TCP, and nothing is dropped).

Rotation (before the server's 24-hour cut-off, or on a shutdown notice): the new
connection is opened first; its frames are held back while the old one goes on for a short
overlap; then the held frames are handed over, the new connection's frames go straight to
the handler from then on, and the old one is closed. The handler drops trades it has
already seen (by trade id), so nothing is lost or doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal
from urllib.parse import urlsplit

import msgspec
from picows import WSInvalidURL, WSMsgType, WSTransport

from spikewatch.core.model import iso_utc
from spikewatch.ingest.backoff import Backoff
from spikewatch.ingest.feed import Feed, close, open_feed, wait_closed

log = logging.getLogger(__name__)

FrameHandler = Callable[[list[bytes], int], bool]
"""``handler(frames, recv_time_ns) -> rotate?``: the messages of one network read, in
order; True asks for a new connection (the server announced a shutdown)."""

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
    connected_since: str | None = None  # ISO 8601 UTC
    next_attempt_in: float | None = None  # seconds, while waiting to reconnect
    oversized_frames: int = 0  # frames over MAX_FRAME_BYTES (each costs a reconnect)
    ever_connected: bool = False  # a connection has opened since start
    # no connection has ever opened and the latest attempt failed (refused, DNS, timeout,
    # TLS, handshake): most likely the exchange cannot be reached from this machine
    unreachable: bool = False


#: An open connection: picows's transport and the feed that delivers its messages.
Conn = tuple[WSTransport, Feed]


class _Closed(msgspec.Struct):
    gen: int
    reason: str


class _RotateDue(msgspec.Struct):
    pass


class _Switch(msgspec.Struct):
    gen: int


class _Stop(msgspec.Struct):
    pass


_Item = _Closed | _RotateDue | _Switch | _Stop


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
        on_connect: Callable[[bool], None] | None = None,
        greeting: Sequence[bytes] = (),
        heartbeat: bytes | None = None,
        heartbeat_interval: float = 0.0,
        before_attempt: Callable[[], Awaitable[None]] | None = None,
        messages_per_second: float = 3.0,
    ) -> None:
        self.url = url
        # awaited before every connection attempt (a budget shared by many clients: the
        # exchange limits connection attempts per IP)
        self._before_attempt = before_attempt
        # requests sent on open connections (subscribe, unsubscribe), paced: the exchange
        # cuts a client that sends more than a few messages a second (pongs included)
        self._outbox: deque[bytes] = deque()
        self._send_gap = 1.0 / messages_per_second
        self._sender: asyncio.Task[None] | None = None
        self._live: dict[int, WSTransport] = {}  # open connections (current, successor)
        # sent on every new connection (subscribe requests, for venues whose URL cannot
        # name the streams), and every heartbeat_interval seconds while it is open
        self._greeting = tuple(greeting)
        self._heartbeat = heartbeat if heartbeat_interval > 0 else None
        self._heartbeat_interval = heartbeat_interval
        self._beats: set[asyncio.Task[None]] = set()
        self._handler = handler
        # called on the loop when a connection opens; True after a lost one (not rotations)
        self._on_connect = on_connect
        self._rotate_after = rotate_after
        self._backoff = backoff or Backoff()
        self._stable_after = stable_after
        self._overlap = overlap
        self._open_timeout = open_timeout
        self._ping_interval = ping_interval
        # control items for the session (frames never go through it)
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._gens = 0  # connections numbered over the client's life
        self._gen = -1  # the connection whose frames go to the handler
        self._pending: int | None = None  # a successor, while its frames are held back
        self._held: list[tuple[list[bytes], int]] = []
        self._stopping = False
        self._rotate = asyncio.Event()  # set: open a successor connection
        self._wake = asyncio.Event()  # set: stop sleeping, we are stopping
        self._delivered: set[int] = set()  # connections of the session that sent data
        self.status = ClientStatus(url=url)

    def _set(self, **changes: object) -> None:
        self.status = msgspec.structs.replace(self.status, **changes)

    def stop(self) -> None:
        """Ask :meth:`run` to return soon (call on the loop's thread)."""
        self._stopping = True
        self._wake.set()
        self._rotate.set()
        self._queue.put_nowait(_Stop())

    def request_rotation(self) -> None:
        """Open a fresh connection and retire the current one without a gap."""
        self._rotate.set()

    def set_url(self, url: str) -> None:
        """Connect to ``url`` from the next connection on (the open ones go on)."""
        self.url = url
        self._set(url=url)

    def send(self, message: bytes) -> None:
        """Send ``message`` on every open connection of this client (the current one and
        a successor being opened), paced; call on the loop's thread. With none open it is
        dropped: the next connection's URL already says what it would have."""
        self._outbox.append(message)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_paced())

    async def _send_paced(self) -> None:
        while self._outbox and not self._stopping:
            message = self._outbox.popleft()
            for transport in list(self._live.values()):
                if not transport.is_disconnected:
                    transport.send(WSMsgType.TEXT, message)
            await asyncio.sleep(self._send_gap)

    async def run(self) -> None:
        """Connect, reconnect on any loss, rotate when due, until :meth:`stop`."""
        lost = False
        while not self._stopping:
            ws = await self._connect_with_backoff(lost)
            if ws is None:
                break
            lost = await self._session(ws)
        self._set(state="stopped", connected_since=None, next_attempt_in=None)

    async def _open(self) -> Conn:
        if self._before_attempt is not None:
            await self._before_attempt()
        conn = await open_feed(
            self.url,
            max_message=MAX_FRAME_BYTES,
            open_timeout=self._open_timeout,
            ping_interval=self._ping_interval,
        )
        transport = conn[0]
        for message in self._greeting:
            transport.send(WSMsgType.TEXT, message)
        if self._heartbeat is not None:
            beat = asyncio.create_task(self._beat(transport, self._heartbeat))
            self._beats.add(beat)
            beat.add_done_callback(self._beats.discard)
        return conn

    async def _beat(self, transport: WSTransport, message: bytes) -> None:
        """The venue's application-level keep-alive, until the connection ends."""
        while True:
            await asyncio.sleep(self._heartbeat_interval)
            if transport.is_disconnected or self._stopping:
                return
            transport.send(WSMsgType.TEXT, message)

    async def _connect_with_backoff(self, reconnect: bool) -> Conn | None:
        while not self._stopping:
            self._set(state="connecting", next_attempt_in=None)
            try:
                ws = await self._open()
            except WSInvalidURL:
                raise
            except Exception as exc:  # DNS, refused, TLS, handshake, timeout: all retried
                delay = self._backoff.next_delay()
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                self._log_failure(error, delay)
                self._set(
                    state="waiting",
                    failed_attempts=self.status.failed_attempts + 1,
                    last_error=error,
                    next_attempt_in=delay,
                    unreachable=not self.status.ever_connected,
                )
                await self._sleep(delay)
                continue
            self._set(
                state="connected",
                connections=self.status.connections + 1,
                reconnects=self.status.reconnects + (1 if reconnect else 0),
                connected_since=_now_iso(),
                next_attempt_in=None,
                ever_connected=True,
                unreachable=False,
            )
            log.info("connected to %s", self.url)
            if self._on_connect is not None:
                self._on_connect(reconnect)
            return ws
        return None

    def _log_failure(self, error: str, delay: float) -> None:
        """One clear line when the exchange has never been reached (every later failed
        attempt at debug level: the status has them), a warning per attempt once it has."""
        if self.status.ever_connected:
            log.warning("connect to %s failed (%s); retrying in %.2fs", self.url, error, delay)
        elif self.status.failed_attempts == 0:
            host = urlsplit(self.url).netloc or self.url
            log.error(
                "%s cannot be reached from this machine (%s); still trying in the "
                "background. Offline? `make demo` runs spikewatch on a real recording "
                "through its built-in exchange simulator, no network needed.",
                host,
                error,
            )
        else:
            log.debug("connect to %s failed (%s); retrying in %.2fs", self.url, error, delay)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when stopped."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    def _sink(self, gen: int) -> Callable[[list[bytes], int], None]:
        """Where connection ``gen`` delivers its frames: to the handler while it is the
        current one, held back while it is a successor, dropped once it is retired."""

        def deliver(frames: list[bytes], recv_ns: int) -> None:
            if self._stopping:
                return
            if gen == self._gen:
                self._delivered.add(gen)  # this connection works (see _session's backoff)
                if self._handler(frames, recv_ns):
                    log.info("%s announced a shutdown; rotating", self.url)
                    self._rotate.set()
            elif gen == self._pending:
                self._delivered.add(gen)
                self._held.append((frames, recv_ns))
            # a retired connection's frames are dropped: its successor has them

        return deliver

    async def _watch(self, transport: WSTransport, gen: int) -> None:
        """Report when connection ``gen`` has closed, and why."""
        reason, oversized = await wait_closed(transport)
        if oversized:
            self._set(oversized_frames=self.status.oversized_frames + 1)
        await self._queue.put(_Closed(gen, reason))

    def _route(self, conn: Conn, gen: int) -> asyncio.Task[None]:
        """Route the frames of connection ``gen`` (already made current or pending: any
        that came with the handshake go out now), and watch for its end."""
        transport, feed = conn
        feed.attach(self._sink(gen))
        self._live[gen] = transport
        return asyncio.create_task(self._watch(transport, gen))

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

    async def _session(self, ws: Conn) -> bool:
        """Serve one connection and its rotations; True when the connection was lost."""
        loop = asyncio.get_running_loop()
        self._pending = None
        self._held.clear()
        self._delivered.clear()
        self._rotate.clear()  # before routing: frames that came with the handshake may ask
        self._drop_stale_items()
        self._gens += 1
        gen = self._gen = self._gens
        watcher = self._route(ws, gen)
        conns: dict[int, tuple[Conn, asyncio.Task[None]]] = {gen: (ws, watcher)}
        opened = loop.time()
        timers = {asyncio.create_task(self._rotation_timer())}
        try:
            while True:
                item = await self._queue.get()
                if self._stopping or isinstance(item, _Stop):
                    return False
                if isinstance(item, _RotateDue):
                    if self._pending is None:
                        new = await self._open_successor()
                        if new is None:  # try again shortly; the old connection still works
                            timers.add(asyncio.create_task(self._retry_rotation()))
                            continue
                        self._gens += 1
                        pending = self._pending = self._gens
                        watcher = self._route(new, pending)
                        conns[pending] = (new, watcher)
                        timers.add(asyncio.create_task(self._switch_later(pending)))
                elif (
                    isinstance(item, _Switch)
                    and item.gen == self._pending
                    and conns[item.gen][0][0].is_disconnected
                ):  # the successor failed just before its turn: keep the current one
                    self._pending = None
                    self._held.clear()
                    await self._retire(*conns.pop(item.gen))
                    timers.add(asyncio.create_task(self._retry_rotation()))
                elif (isinstance(item, _Switch) and item.gen == self._pending) or (
                    isinstance(item, _Closed)
                    and item.gen == self._gen
                    and self._pending is not None
                ):
                    old = self._gen
                    self._switch(conns[self._pending][0][0])
                    await self._retire(*conns.pop(old))
                    self._set(rotations=self.status.rotations + 1, connected_since=_now_iso())
                    opened = loop.time()
                    timers.add(asyncio.create_task(self._rotation_timer()))
                elif isinstance(item, _Closed) and item.gen == self._gen:
                    log.warning("lost connection to %s: %s", self.url, item.reason)
                    if loop.time() - opened >= self._stable_after:
                        self._backoff.reset()
                    elif item.gen in self._delivered:
                        # short, but it delivered data: the server works, and a run of such
                        # drops must not climb to the cap (signals would come that late).
                        # One step above the smallest delay keeps reconnects to about one
                        # a second at most (Binance: 300 connections per 5 minutes and IP).
                        # https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams
                        self._backoff.reset()
                        self._backoff.attempt = 1
                    # else it failed before any data: keep backing off further
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
                    self._pending = None
                    self._held.clear()
                    await self._retire(*conns.pop(item.gen))
                    timers.add(asyncio.create_task(self._retry_rotation()))
                timers = {t for t in timers if not t.done()}
        finally:
            self._gen, self._pending = -1, None
            self._held.clear()
            for timer in timers:
                timer.cancel()
            for conn, watcher in list(conns.values()):
                await self._retire(conn, watcher)

    def _drop_stale_items(self) -> None:
        """Forget control items of an earlier session (a rotation it had asked for, say);
        a stop request is kept."""
        stop = False
        while not self._queue.empty():
            stop = stop or isinstance(self._queue.get_nowait(), _Stop)
        if stop:
            self._queue.put_nowait(_Stop())

    def _switch(self, successor: WSTransport) -> None:
        """Make the successor current: hand over its held frames, then route its new
        ones straight to the handler. No await in between, so nothing can overtake."""
        pending = self._pending
        assert pending is not None
        held, self._held = self._held, []
        self._pending = None
        self._gen = pending
        for frames, recv_ns in held:
            try:
                shutdown = self._handler(frames, recv_ns)
            except Exception:
                # as for live frames (Feed): never lose them silently; the new connection
                # is dropped, and reconnecting catches up on what it had
                log.exception("the frame handler failed; dropping the connection")
                successor.disconnect(graceful=False)
                return
            if shutdown:
                log.info("%s announced a shutdown; rotating", self.url)
                self._rotate.set()

    async def _retry_rotation(self) -> None:
        await asyncio.sleep(self._backoff.next_delay())
        await self._queue.put(_RotateDue())

    async def _open_successor(self) -> Conn | None:
        try:
            ws = await self._open()
        except Exception as exc:
            log.warning("could not open a successor connection to %s: %s", self.url, exc)
            self._set(last_error=f"{type(exc).__name__}: {exc}")
            return None
        self._set(connections=self.status.connections + 1)
        return ws

    async def _retire(self, conn: Conn, watcher: asyncio.Task[None]) -> None:
        for gen, transport in list(self._live.items()):
            if transport is conn[0]:
                del self._live[gen]
        watcher.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await close(conn[0])
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await watcher


def _now_iso() -> str:
    """The wall-clock time now, ISO 8601 UTC (as every time in ``/api/status``)."""
    return iso_utc(time.time_ns() // 1000)
