"""Where the hub's push thread writes a live stream: the client's connection.

Under waitress (``python app.py``) the push thread writes straight into the client's
connection (:class:`ChannelOutlet`): one thread serves every live stream, and the request
thread of each stream sleeps until the stream ends, costing no CPU. The bytes a client
has not taken are waitress's output buffer for it, so the hub sees exactly how far each
client is behind, and a client that is cut is closed at once, its buffer freed.

Under any other WSGI server (Flask's test client, ``flask run``) the push thread fills a
bounded buffer that the request thread drains (:class:`BufferOutlet`), which is what
WSGI allows. The hub's rules (filters, batching, limits) are the same for both.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

from waitress.channel import ClientDisconnected, HTTPChannel

#: SO_LINGER on, 0 s: closing the socket resets the connection, dropping unsent data.
_ABORT = struct.pack("ii", 1, 0)


class ChannelOutlet:
    """A live stream written straight into its waitress channel (see the module doc).

    Relies on waitress's channel (2.x and 3.x alike): ``outbuf_lock`` (held around every
    use of its buffers and socket), ``write_soon`` (what request threads call),
    ``total_outbufs_len``, ``current_outbuf_count``, ``last_activity``, ``connected``,
    ``socket``, ``cancel`` and ``server.pull_trigger``; ``tests/integration/
    test_web_hardening.py`` and ``test_stream.py`` run it on the real server."""

    def __init__(self, channel: HTTPChannel, chunked: bool) -> None:
        self._channel: Any = channel
        self._chunked = chunked  # HTTP/1.1: waitress sends the response chunked
        self._done = threading.Event()

    def write(self, data: bytes) -> bool:
        """See :class:`spikewatch.hub.Outlet`."""
        channel = self._channel
        if not channel.connected:
            return False
        if self._chunked:
            data = b"%X\r\n%b\r\n" % (len(data), data)
        try:
            with channel.outbuf_lock:
                if channel.total_outbufs_len:  # behind: queue it after what waits
                    channel.write_soon(data)
                    return True
                # nothing waits: straight to the socket (non-blocking), which is most of
                # the time; waitress's buffers only take what the socket would not
                sent = self._send(data)
                if sent < 0:
                    return False
                if sent:
                    channel.last_activity = time.time()
                if sent < len(data):
                    # start a fresh buffer (waitress's own trick between requests): a
                    # buffer keeps all ever written to it until it is replaced, which for
                    # a stream open for hours is only at the high watermark
                    channel.current_outbuf_count = channel.adj.outbuf_high_watermark
                    # never blocks: the hub keeps what is unsent far below waitress's
                    # high watermark, the only point at which write_soon waits
                    channel.write_soon(data[sent:])
        except ClientDisconnected:
            return False
        return True

    def _send(self, data: bytes) -> int:
        """Bytes of ``data`` the socket took now; -1 if the connection is gone."""
        try:
            return int(self._channel.socket.send(data))
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:  # reset, broken pipe: the server's loop closes it
            self._channel.cancel()
            self._channel.server.pull_trigger()
            return -1

    def unsent(self) -> int:
        """See :class:`spikewatch.hub.Outlet`."""
        return int(self._channel.total_outbufs_len)

    def stalled(self) -> float:
        """See :class:`spikewatch.hub.Outlet`."""
        channel = self._channel
        if not channel.total_outbufs_len:
            return 0.0
        # waitress stamps last_activity (wall clock) whenever the client takes bytes
        return max(0.0, time.time() - float(channel.last_activity))

    def cut(self) -> None:
        """See :class:`spikewatch.hub.Outlet`."""
        channel = self._channel
        sock = channel.socket
        channel.cancel()  # write_soon raises from now on; the server's loop closes it
        with contextlib.suppress(OSError):  # closed meanwhile
            # on close, reset: what the system still holds for the client goes too
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT)
            # a client that reads nothing leaves its socket unwritable, and the server's
            # loop would wait for it forever before closing; shut down, it is "writable"
            # (and hung up) at once, so the loop closes it on its next turn, which also
            # wakes a request thread waiting in write_soon
            sock.shutdown(socket.SHUT_RDWR)
        channel.server.pull_trigger()

    def close(self) -> None:
        """See :class:`spikewatch.hub.Outlet`."""
        self._done.set()

    def stream(self) -> Iterator[bytes]:
        """The rest of the response body, as the request thread sends it: nothing (the
        push thread writes it); returns when the stream is over."""
        self._done.wait()
        return
        yield b""  # a generator


class BufferOutlet:
    """A live stream through a buffer that the request thread drains (any WSGI server)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._chunks: list[bytes] = []
        self._size = 0
        self._closed = False

    def write(self, data: bytes) -> bool:
        """See :class:`spikewatch.hub.Outlet`."""
        with self._cond:
            if self._closed:
                return False
            self._chunks.append(data)
            self._size += len(data)
            self._cond.notify()
        return True

    def unsent(self) -> int:
        """See :class:`spikewatch.hub.Outlet`."""
        return self._size

    def stalled(self) -> float:
        """See :class:`spikewatch.hub.Outlet` (not known here: the server's own buffers
        are out of sight)."""
        return 0.0

    def cut(self) -> None:
        """See :class:`spikewatch.hub.Outlet`."""
        with self._cond:
            self._chunks, self._size, self._closed = [], 0, True
            self._cond.notify()

    def close(self) -> None:
        """See :class:`spikewatch.hub.Outlet`."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def stream(self) -> Iterator[bytes]:
        """The rest of the response body, as it comes; returns when the stream is over."""
        while True:
            with self._cond:
                while not self._chunks and not self._closed:
                    self._cond.wait()
                data, closed = b"".join(self._chunks), self._closed
                self._chunks, self._size = [], 0
            if data:
                yield data
            if closed:
                return


def outlet_for(environ: dict[str, Any]) -> ChannelOutlet | BufferOutlet:
    """The outlet for the live stream of the request ``environ``."""
    # waitress puts its channel's check_client_disconnected in the environ (documented
    # since waitress 2.0); the channel is that bound method's object
    probe = environ.get("waitress.client_disconnected")
    channel = getattr(probe, "__self__", None)
    if isinstance(channel, HTTPChannel):
        return ChannelOutlet(channel, chunked=environ.get("SERVER_PROTOCOL") == "HTTP/1.1")
    return BufferOutlet()
