"""The production web server: waitress, with the bounds a server open to anyone needs.

- A connection with no request in progress closes after ``IDLE_TIMEOUT_S`` (waitress's
  ``channel_timeout``; streams in progress are not idle).
- At the connection limit waitress stops accepting, so a flood of idle sockets would
  leave every new client (health checks included) waiting in the kernel's backlog until
  the flood's connections time out. Here the oldest idle connections are closed instead,
  to make room: a connection that is doing nothing gives way to one that wants something.
- Each turn of the server's loop accepts every waiting connection (up to
  ``ACCEPT_BATCH``), not one, and the loop uses ``poll`` (``select`` stops at 1024 sockets).
- The output a request thread may queue for a slow client is bounded
  (``OUTBUF_HIGH_WATERMARK``: then the thread waits for the client); live streams have
  their own, lower bound in the hub (``spikewatch.hub.MAX_UNSENT``).
- The connection limit is kept within the process's file descriptor limit (raised to
  fit, where the system allows).
- A request the ``quick`` predicate names (``GET /api/get_signal`` while the latest
  signal's encoding is in memory: a reference read) is answered by the server's loop
  itself, as soon as it is read, instead of being handed to a request thread: one thread
  wake-up and one GIL hand-over fewer per request, which the ingest thread (busy Python)
  and a loaded machine make cost milliseconds. Only a connection with nothing queued for
  it and no other request waiting is answered there, so the loop never waits for output
  to drain.
"""

from __future__ import annotations

import errno
import logging
import sys
from collections.abc import Callable
from typing import Any

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

from spikewatch.ingest.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

#: Seconds a connection may stay open with no request in progress.
IDLE_TIMEOUT_S = 30
#: Seconds between checks for idle connections.
CLEANUP_INTERVAL_S = 5
#: Connections open at once, at most (kept within the file descriptor limit).
CONNECTION_LIMIT = 2048
#: File descriptors left for everything else (database, logs, temporary files).
FD_RESERVE = 128
#: Bytes of response a request thread may queue for a client before it waits for it.
OUTBUF_HIGH_WATERMARK = 1024 * 1024
#: Connections accepted per turn of the server's loop, at most.
ACCEPT_BATCH = 64


class ServeError(Exception):
    """The server cannot listen where it was asked to; the message says why in one line."""


#: ``quick(method, path, query)``: whether the app answers this request at once (see the
#: module docstring).
Quick = Callable[[str, str, str], bool]


class _Channel(HTTPChannel):  # type: ignore[misc]  # waitress is untyped
    """waitress's connection, which serves a quick request on the loop's thread once the
    read that completed it is parsed (see the module docstring)."""

    reading = False  # in handle_read: add_task is being called by the loop
    serve_here = False  # add_task kept the request for the loop

    def handle_read(self) -> None:
        self.reading = True
        try:
            super().handle_read()
        finally:
            self.reading = False
        if self.serve_here:  # (received() holds requests_lock: served only after it)
            self.serve_here = False
            self.service()


class _Server(TcpWSGIServer):  # type: ignore[misc]  # waitress is untyped
    """waitress's TCP server, whose accept loop keeps going under a flood of idle
    connections, and whose loop answers quick requests itself (see the module
    docstring)."""

    channel_class = _Channel
    evicted = 0  # idle connections closed to make room
    quick: Quick | None = None

    def add_task(self, task: Any) -> None:
        quick = self.quick
        if (
            quick is not None
            and getattr(task, "reading", False)
            and not task.total_outbufs_len
            and len(task.requests) == 1
        ):
            request = task.requests[0]
            if request.error is None and quick(request.command, request.path, request.query):
                task.serve_here = True
                return
        super().add_task(task)

    def readable(self) -> bool:
        if self.accepting:
            self._make_room()
        return bool(super().readable())

    def handle_accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            before = len(self._map)
            if before >= self.adj.connection_limit:
                return
            super().handle_accept()
            if len(self._map) == before:  # nothing waiting (or it failed: logged)
                return

    def _make_room(self) -> None:
        """Near the connection limit: close the longest-idle connections (those without
        queued output first), a batch at a time, so that new ones are still accepted."""
        limit = self.adj.connection_limit
        batch = max(1, limit // 16)
        if len(self._map) < limit - batch:
            return
        channels = list(self.active_channels.values())
        closing = sum(1 for ch in channels if ch.will_close)
        if len(self._map) - closing < limit - batch:
            return  # room is being made already
        idle = [ch for ch in channels if not ch.requests and not ch.will_close]
        idle.sort(key=lambda ch: (bool(ch.total_outbufs_len), ch.last_activity))
        for channel in idle[:batch]:
            channel.will_close = True  # the loop closes it on its next turn
        if idle:
            self.evicted += min(batch, len(idle))
            _ratelog.warning(
                "evict",
                f"{len(self._map)} connections open (limit {limit}): closed the "
                f"{min(batch, len(idle))} longest idle to make room",
            )
            self.pull_trigger()


_ratelog = RateLimitedLog(log)


def create_server(
    app: Any,
    host: str,
    port: int,
    threads: int,
    *,
    connection_limit: int | None = None,
    idle_timeout: int = IDLE_TIMEOUT_S,
    cleanup_interval: int = CLEANUP_INTERVAL_S,
    quick: Quick | None = None,
) -> Any:
    """waitress serving ``app`` on ``host``:``port`` with ``threads`` request threads, the
    bounds of the module docstring, and ``connection_limit`` connections at most (None:
    ``CONNECTION_LIMIT``, within the file descriptor limit, which is raised to fit where
    the system allows); requests ``quick`` names are answered by the server's loop.
    Raises :class:`ServeError` when it cannot listen there."""
    if connection_limit is None:
        connection_limit = _fitting_connection_limit(CONNECTION_LIMIT)
    try:
        adj = Adjustments(
            host=host,
            port=port,
            threads=threads,
            connection_limit=connection_limit,
            channel_timeout=idle_timeout,
            cleanup_interval=cleanup_interval,
            outbuf_high_watermark=OUTBUF_HIGH_WATERMARK,
            asyncore_use_poll=True,
            ident="spikewatch",
        )
    except ValueError:  # waitress: the name did not resolve
        raise ServeError(f"cannot listen on host {host!r}: no such host or address") from None
    socket_map: dict[int, Any] = {}
    dispatcher = ThreadedTaskDispatcher()
    servers = []
    try:
        for sockinfo in adj.listen:
            servers.append(
                _Server(app, socket_map, dispatcher=dispatcher, adj=adj, sockinfo=sockinfo)
            )
    except OSError as exc:
        wasyncore.close_all(socket_map)
        raise ServeError(_bind_problem(exc, host, port)) from None
    for server in servers:
        server.quick = quick
    dispatcher.set_thread_count(threads)  # only once listening: nothing to stop otherwise
    if len(servers) == 1:
        return servers[0]
    listening = [(s.effective_host, s.effective_port) for s in servers]
    return MultiSocketServer(socket_map, adj, listening, dispatcher, servers[-1].log_info)


def server_url(server: Any) -> str:
    """The address ``server`` (from :func:`create_server`) answers at."""
    host, port = (
        server.effective_listen[0]
        if hasattr(server, "effective_listen")
        else (server.effective_host, server.effective_port)
    )
    if ":" in str(host):
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def _bind_problem(exc: OSError, host: str, port: int) -> str:
    if exc.errno == errno.EADDRINUSE:
        hint = f"; try --port {port + 1}" if 0 < port < 65535 else ""
        return f"port {port} is in use{hint}"
    if exc.errno == errno.EACCES:
        return f"no permission to listen on port {port}; try a port above 1023"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on host {host!r}: not an address of this machine"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


def _fitting_connection_limit(wanted: int) -> int:
    """``wanted``, or less where the process may not open that many files."""
    if sys.platform == "win32":
        return min(wanted, 500)  # select() there takes 512 sockets at most
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        raised = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(16, min(wanted, soft - FD_RESERVE))
