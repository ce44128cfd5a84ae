"""One WebSocket connection that delivers the messages of each network read at once.

The protocol (handshake, framing, masking, size limit, pings and pongs, TLS) is picows's,
a WebSocket library whose frame parser is compiled (Cython): the pure-Python parser of
``websockets`` cost as much per trade as all of detection, and a burst of hundreds of
trades paid it hundreds of times before the first signal could leave. Here each read's
complete messages are collected and handed to a sink in one call, inside the read: no
queue, future or task switch per message, and the socket is not read again until the
sink returns (so a slow consumer pushes back on the server through TCP).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSProtocolError,
    WSTransport,
    ws_connect,
)

log = logging.getLogger(__name__)

#: ``sink(messages, recv_time_ns)``: the complete messages of one read, in order.
Sink = Callable[[list[bytes], int], None]

_DATA = (WSMsgType.TEXT, WSMsgType.BINARY)


class Feed(WSListener):
    """The listener of one connection. Messages that arrive before :meth:`attach` (in the
    same read as the handshake response) wait for it."""

    def __init__(self, max_message: int) -> None:
        self.transport: WSTransport | None = None
        self._max_message = max_message
        self._sink: Sink | None = None
        self._batch: list[bytes] = []
        self._fragments: list[bytes] = []
        self._fragment_bytes = 0
        self._recv_ns = 0
        self._new_read = True

    def attach(self, sink: Sink) -> None:
        """Deliver messages to ``sink`` from now on, starting with any waiting."""
        self._sink = sink
        if self._batch:
            self._deliver()

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def is_user_specific_pong(self, frame: WSFrame) -> bool:
        # every frame comes to on_ws_frame (pongs included, see there): the last frame of
        # a read must be seen, or that read's messages would wait for the next one
        return False

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if self._new_read:  # the first frame of a network read: when it came
            self._recv_ns = time.time_ns()
            self._new_read = False
        if frame.last_in_buffer:
            self._new_read = True
        try:
            self._take(transport, frame)
        finally:  # even after a protocol error, what came before it is handed over
            if frame.last_in_buffer and self._batch and self._sink is not None:
                self._deliver()

    def _take(self, transport: WSTransport, frame: WSFrame) -> None:
        """One frame: a message (or part of one) kept, a ping answered, a pong noted, a
        close answered."""
        if transport.is_close_frame_sent or frame.payload_size > self._max_message:
            # closing (picows parses on for a moment after refusing an oversized frame,
            # which it may then pass on): nothing more is delivered
            return
        kind = frame.msg_type
        if kind in _DATA:
            if self._fragments:
                raise WSProtocolError(WSCloseCode.PROTOCOL_ERROR, "a new message inside another")
            if frame.fin:
                self._batch.append(frame.get_payload_as_bytes())
            else:
                self._fragment(frame)
        elif kind is WSMsgType.CONTINUATION:
            if not self._fragments:
                raise WSProtocolError(WSCloseCode.PROTOCOL_ERROR, "a continuation of nothing")
            self._fragment(frame)
            if frame.fin:
                self._batch.append(b"".join(self._fragments))
                self._fragments.clear()
        elif kind is WSMsgType.PING:  # Binance pings every 20 s; no pong in 1 min: cut off
            transport.send_pong(frame.get_payload_as_bytes())
        elif kind is WSMsgType.PONG:  # the answer to our keep-alive ping
            transport.notify_user_specific_pong_received()
        elif kind is WSMsgType.CLOSE:  # the closing handshake: answer, then disconnect
            code = frame.get_close_code()
            if code == WSCloseCode.NO_INFO:  # a close without a code (0 is no code to send)
                transport.send_close(WSCloseCode.OK)
            else:
                transport.send_close(code, frame.get_close_message())
            transport.disconnect()

    def _fragment(self, frame: WSFrame) -> None:
        """Keep one fragment of a message, within the size limit of a whole message."""
        if not self._fragments:
            self._fragment_bytes = 0
        self._fragment_bytes += frame.payload_size
        if self._fragment_bytes > self._max_message:
            raise WSProtocolError(WSCloseCode.MESSAGE_TOO_BIG, "fragmented message too big")
        self._fragments.append(frame.get_payload_as_bytes())

    def _deliver(self) -> None:
        batch, self._batch = self._batch, []
        sink = self._sink
        assert sink is not None
        try:
            sink(batch, self._recv_ns)
        except Exception:
            # never lose frames silently: drop the connection; reconnecting catches up
            log.exception("the frame handler failed; dropping the connection")
            if self.transport is not None:
                self.transport.disconnect(graceful=False)


async def open_feed(
    url: str, *, max_message: int, open_timeout: float, ping_interval: float
) -> tuple[WSTransport, Feed]:
    """Connect to ``url``; raises on any failure (refused, DNS, TLS, handshake, timeout).

    A connection silent for ``ping_interval`` seconds is pinged, and dropped when the pong
    does not come within as long again."""
    transport, feed = await asyncio.wait_for(
        ws_connect(
            lambda: Feed(max_message),
            url,
            websocket_handshake_timeout=open_timeout,
            enable_auto_ping=True,
            auto_ping_idle_timeout=ping_interval,
            auto_ping_reply_timeout=ping_interval,
            enable_auto_pong=False,  # Feed answers pings: it must see every frame
            max_frame_size=max_message,
            use_aiofastnet=False,
        ),
        timeout=open_timeout,
    )
    if not isinstance(feed, Feed):  # picows makes no listener when the server hung up
        with contextlib.suppress(Exception):
            transport.disconnect(graceful=False)
        raise ConnectionError("the server closed the connection during the WebSocket handshake")
    return transport, feed


async def wait_closed(transport: WSTransport) -> tuple[str, bool]:
    """Wait until the connection has ended; why it ended (for logs and the status), and
    whether it was for a message over the size limit."""
    error: Exception | None = None
    try:
        await transport.wait_disconnected()
    except Exception as exc:  # a local failure: protocol error, oversized frame, handler
        error = exc
    handshake = transport.close_handshake
    if handshake is None:
        if error is not None:
            return f"{type(error).__name__}: {error}", False
        return "connection closed (no close frame)", False
    sent, received = handshake.sent, handshake.recv
    if sent is not None and not handshake.recv_then_sent:  # we closed it
        if sent.code == WSCloseCode.MESSAGE_TOO_BIG:
            return "a message over the size limit; connection closed", True
        why = sent.reason or (f"{type(error).__name__}: {error}" if error else "")
        return f"closed by us ({_code(sent.code)}{': ' + why if why else ''})", False
    if received is not None:
        return f"connection closed ({_code(received.code)})", False
    return "connection closed (no close frame)", False


def _code(code: object) -> object:
    """A close code as a number (picows gives known ones as an enum)."""
    return getattr(code, "value", code)


#: Seconds a closing handshake may take before the connection is dropped.
CLOSE_TIMEOUT = 2.0


async def close(transport: WSTransport) -> None:
    """Close politely (a close frame, then wait for the server), abruptly after
    :data:`CLOSE_TIMEOUT`."""
    if not transport.is_disconnected:
        transport.send_close(WSCloseCode.OK)
        transport.disconnect(graceful=True)
    try:
        await asyncio.wait_for(transport.wait_disconnected(), CLOSE_TIMEOUT)
    except Exception:  # timed out, or the connection had failed: make sure it is gone
        transport.disconnect(graceful=False)
