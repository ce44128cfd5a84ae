"""A local HTTP receiver for alert-delivery tests.

It listens on 127.0.0.1, records every request (path, headers, body, what it answered),
and can be told to misbehave: refuse connections (stopped), answer with an error status
and a ``Retry-After``, or hang without answering.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from helpers import wait_until


@dataclasses.dataclass(frozen=True)
class Reply:
    """What the receiver answers to one request."""

    status: int = 200
    retry_after: str | None = None


#: a reply that never comes (until released, or the receiver stops)
HANG = Reply(-1)


@dataclasses.dataclass(frozen=True)
class Received:
    """One request as the receiver got it."""

    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int  # what it answered; -1 when it held the request
    at: float  # wall-clock seconds when the body had arrived

    @property
    def alert_id(self) -> str:
        """The idempotency header."""
        return self.headers.get("x-spikewatch-alert-id", "")

    @property
    def acknowledged(self) -> bool:
        """Answered 2xx, or held (the receiver had it: a client cannot tell)."""
        return 200 <= self.status < 300 or self.status == HANG.status

    def json(self) -> Any:
        """The body, decoded."""
        return json.loads(self.body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # held handlers must not hold up stop()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (timed out, killed) is expected here: say nothing."""


class Receiver:
    """An HTTP server on ``127.0.0.1:port`` (a free one by default), not yet listening:
    :meth:`start` it. Stopped, its port refuses connections."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self._lock = threading.Lock()
        self._requests: list[Received] = []
        self._plan: list[Reply | int] = []
        self._default = Reply(200)
        self._hold_from: int | None = None
        self._released = threading.Event()
        #: called with each request before it is answered (not for held ones)
        self.on_request: Callable[[Received], None] | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- control ------------------------------------------------------------------------

    def start(self) -> Receiver:
        """Listen (again, on the same port after a stop)."""
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                reply = receiver._next(self.path, headers, body)
                if reply == HANG:
                    receiver._released.wait(60)
                    return
                hook = receiver.on_request
                if hook is not None:
                    hook(receiver.requests[-1])
                self.send_response(reply.status)
                if reply.retry_after is not None:
                    self.send_header("Retry-After", reply.retry_after)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

        self._released.clear()
        self._server = _Server(("127.0.0.1", self.port), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (connections are refused from now on); held requests end."""
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, path: str = "/hook") -> str:
        """``http://127.0.0.1:PORT/path``."""
        return f"http://127.0.0.1:{self.port}{path}"

    def plan(self, *replies: Reply | int) -> None:
        """Answer the next requests with these, in order (an int is a status); then with
        the default."""
        with self._lock:
            self._plan.extend(replies)

    def answer(self, reply: Reply) -> None:
        """Answer every unplanned request with ``reply`` from now on."""
        with self._lock:
            self._default = reply

    def hold_from(self, n: int) -> None:
        """Hold the ``n``-th request (counting from 1) and every one after it, without an
        answer, until :meth:`release`."""
        with self._lock:
            self._hold_from = n

    def release(self) -> None:
        """Let held requests go (their clients may be gone) and hold no more."""
        with self._lock:
            self._hold_from = None
        self._released.set()

    # -- what it got --------------------------------------------------------------------

    def _next(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        with self._lock:
            number = len(self._requests) + 1
            planned = self._plan.pop(0) if self._plan else self._default
            reply = Reply(planned) if isinstance(planned, int) else planned
            if self._hold_from is not None and number >= self._hold_from:
                reply = HANG
            self._requests.append(Received(path, headers, body, reply.status, time.time()))
        return reply

    @property
    def requests(self) -> list[Received]:
        """Every request so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def acknowledged(self) -> list[Received]:
        """The requests it answered 2xx or held."""
        return [r for r in self.requests if r.acknowledged]

    def alert_ids(self) -> list[str]:
        """The alert ids in the acknowledged bodies (a summary gives many), with repeats."""
        out: list[str] = []
        for request in self.acknowledged():
            out.extend(a["id"] for a in request.json()["alerts"])
        return out

    def duplicates(self) -> Counter[str]:
        """Idempotency ids acknowledged more than once, and how many extra times."""
        counts = Counter(r.alert_id for r in self.acknowledged())
        return Counter({k: n - 1 for k, n in counts.items() if n > 1})

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """Wait until it has got ``count`` requests."""
        wait_until(lambda: len(self.requests) >= count, timeout)
        return self.requests
