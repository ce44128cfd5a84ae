"""A local exchange that speaks Binance's market-stream protocol, from a tape.

The venue's codec (``exchange.simulator_codec()``; spot by default) names the routes,
paths and frame shapes. For spot, WebSocket: ``/ws/<stream>[/<stream>...]`` (raw
events), ``/stream?streams=a/b`` (combined wrapper ``{"stream":..,"data":..}``), and
``/ws`` or ``/stream`` followed by ``SUBSCRIBE`` requests, answered as Binance answers.
REST on the same port: ``/api/v3/ping``, ``/api/v3/time``, ``/api/v3/exchangeInfo``,
``/api/v3/trades`` and ``/api/v3/historicalTrades``, from the trades played so far. For
USD-M futures the same under ``/public/ws`` and ``/public/stream`` and ``/fapi/v1/...``,
where ``historicalTrades`` answers 401 without the API key header the codec names.

Pace: ``speed=None`` plays as fast as the clients read, and pauses while nobody is
connected (so a dropped client misses nothing); ``speed=N`` plays at N times the
recorded pace from the first connection on, like a live exchange (a disconnected client
misses what plays meanwhile); trades due at the same moment (a large order filling many
levels) leave in one write, as an exchange's server sends a burst, unless a per-frame
fault is set.

``loop=True`` plays the tape again and again (for the demo), moving trade ids and times
on past the previous lap so they stay increasing.

Faults for tests: drop a connection every N frames, insert malformed frames, send trades
as fragmented messages, announce a ``serverShutdown``, fail REST calls with given statuses,
answer them with 200 replies that cannot be used.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from urllib.parse import parse_qs, urlsplit

import msgspec
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from spikewatch.core.model import Trade
from spikewatch.exchanges.base import Control, SimulatorCodec
from spikewatch.exchanges.binance import BinanceSpot
from spikewatch.replay.tape import TapeEntry

log = logging.getLogger(__name__)

#: Frames the fault injector sends when asked for malformed ones (cycled in order).
BAD_FRAMES: tuple[bytes, ...] = (
    b"this is not json",
    b'{"stream":"btcusdt@trade","data":{"e":"trade"}}',
    b'{"e":"trade","E":1,"s":"BTCUSDT","t":1,"p":"0","q":"1.0","T":1,"m":true}',
    b'{"e":"trade","E":1,"s":"BTCUSDT","t":1,"p":"NaN","q":"1.0","T":1,"m":true}',
    b'{"e":"trade","E":1,"s":"BTCUSDT","t":1,"p":"1.0","q":"-3","T":1,"m":true}',
    b'{"e":"trade","E":1,"s":"BTCUSDT","t":"x","p":"1.0","q":"1","T":1,"m":true}',
    b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":1,"p":"1.0",',
    b"[1, 2, 3]",
)


#: What ``Faults.bad_replies`` may ask for: 200 replies a trade look-up cannot use.
BAD_REPLIES = (
    "html",  # an HTML page (a proxy's or captive portal's), as text/html
    "garbage",  # bytes that are no JSON
    "empty",  # no body at all
    "empty_list",  # [] although the trades asked for exist
    "error_object",  # a JSON error object instead of the list
    "wrong_id",  # real trades, but from ten ids after the one asked for
    "hole",  # real trades from the id asked for, with one missing (spot has no holes)
)

#: Trades due at the same moment sent in one write, at most.
MAX_GROUP = 1024
#: Bytes waiting in a client's send buffer beyond which the simulator waits for it.
MAX_BUFFERED = 1 << 20

#: Trades per symbol the REST endpoints can still serve (older ones are forgotten).
REST_HISTORY = 500_000

#: Pieces a fragmented message is cut into, one WebSocket frame each (``Faults.fragment_every``).
FRAGMENTS = 3


class Faults(msgspec.Struct, frozen=True, kw_only=True):
    """What the simulator does wrong on purpose (or legal but unusual, as fragmented
    messages: ``fragment_every=N`` sends every Nth trade frame as one text message cut
    into :data:`FRAGMENTS` pieces, each in its own WebSocket frame, a first one and
    continuations, which a client must put back together; websockets ends such a
    message with an empty final continuation frame)."""

    drop_every: int = 0  # close each connection abruptly after this many trade frames
    malformed_every: int = 0  # send a malformed frame before every Nth trade frame
    shutdown_after: int = 0  # announce serverShutdown after this many frames per connection
    shutdown_grace: float = 0.5  # seconds between the announcement and the close
    resend_on_connect: int = 0  # re-send this many already-played frames to a new connection
    huge_every: int = 0  # send a 2 MiB junk frame before every Nth trade frame
    fragment_every: int = 0  # send every Nth trade frame as a fragmented message
    stall_after: int = 0  # go silent (connection open, nothing sent) after N frames
    # statuses for the next historicalTrades calls (429, 418, 500, ...), then it works
    rest_failures: tuple[int, ...] = ()
    retry_after: int = 1  # Retry-After seconds on 429/418
    # 200 replies that cannot be used, for the next historicalTrades calls (after any
    # rest_failures), then it works: one of BAD_REPLIES' kinds each
    bad_replies: tuple[str, ...] = ()


class SimulatorStats(msgspec.Struct, frozen=True):
    """Counters of the simulator."""

    played: int
    total: int
    frames_sent: int
    connections: int
    open_connections: int
    drops: int
    malformed_sent: int
    fragmented_sent: int  # trade frames sent as fragmented messages
    shutdowns_sent: int
    rest_calls: int
    done: bool


class _Client:
    __slots__ = ("combined", "sent", "stalled", "streams", "ws")

    def __init__(self, ws: ServerConnection, streams: set[str], combined: bool) -> None:
        self.ws = ws
        self.streams = streams
        self.combined = combined
        self.sent = 0
        self.stalled = False


def _json(status: int, body: object, headers: Sequence[tuple[str, str]] = ()) -> Response:
    payload = msgspec.json.encode(body)
    hdrs = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    for name, value in headers:
        hdrs[name] = value
    return Response(status, http.HTTPStatus(status).phrase, hdrs, payload)


def _fragments(payload: bytes, parts: int) -> list[bytes]:
    """``payload`` cut into ``parts`` pieces of about equal size, in order (the last ones
    empty when it is shorter than ``parts`` bytes: a continuation frame may be empty)."""
    step = -(-len(payload) // parts)
    return [payload[i * step : (i + 1) * step] for i in range(parts)]


class Simulator:
    """Serves ``tape`` over WebSocket and REST on 127.0.0.1; see the module docstring."""

    def __init__(
        self,
        tape: Sequence[TapeEntry],
        *,
        codec: SimulatorCodec | None = None,
        speed: float | None = None,
        faults: Faults | None = None,
        loop: bool = False,
    ) -> None:
        if speed is not None and speed <= 0:
            raise ValueError("speed must be > 0, or None for as fast as clients read")
        if not tape:
            raise ValueError("the tape holds no trades")
        self.tape = tape
        self.codec: SimulatorCodec = codec or BinanceSpot().simulator_codec()
        self.speed = speed
        self.loop = loop  # play the tape again and again, ids and times moved on each lap
        #: when set (a dict), the wall-clock ns at which each trade id was first sent
        self.sent_at: dict[int, int] | None = None
        self.faults = faults or Faults()
        self._clients: set[_Client] = set()
        self._have_clients = asyncio.Event()
        self._played = 0
        self._frames_sent = 0
        self._connections = 0
        self._drops = 0
        self._malformed = 0
        self._fragmented = 0
        self._shutdowns = 0
        self._rest_calls = 0
        self._rest_failures = deque(self.faults.rest_failures)
        unknown = set(self.faults.bad_replies) - set(BAD_REPLIES)
        if unknown:
            raise ValueError(f"unknown bad_replies {sorted(unknown)}: use {BAD_REPLIES}")
        self._bad_replies = deque(self.faults.bad_replies)
        self._recent: deque[TapeEntry] = deque(maxlen=max(1, self.faults.resend_on_connect))
        self.done = asyncio.Event()
        self._server: Server | None = None
        self._producer: asyncio.Task[None] | None = None
        # Binance's spot and futures @trade events decode alike (the venue name is unused)
        parser = BinanceSpot()
        # per symbol: trades in id order, for REST; filled as the tape plays
        self._trades: dict[str, list[Trade]] = {}
        # None: a recorded fill that is no market trade (a futures insurance fund or ADL
        # fill): streamed as recorded, but not in REST replies (Binance leaves them out)
        self._parsed: list[Trade | None] = []
        self._by_symbol: dict[str, list[Trade]] = {}
        for entry in tape:
            trade = parser.parse(entry.payload)
            if trade is Control.IGNORED:
                self._parsed.append(None)
                continue
            if not isinstance(trade, Trade):
                raise ValueError(f"tape entry is not a trade: {entry.payload[:80]!r}")
            self._parsed.append(trade)
            self._by_symbol.setdefault(entry.symbol, []).append(trade)
            self._trades.setdefault(entry.symbol, [])
        if not self._by_symbol:
            raise ValueError("the tape holds no trades")
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port`` (0 = any free port) and start playing; returns the port."""
        self._server = await serve(
            self._handle,
            host,
            port,
            process_request=self._process_request,
            ping_interval=20,
            compression=None,
            max_size=1 << 16,
        )
        sock = next(iter(self._server.sockets))
        self.port = int(sock.getsockname()[1])
        self._producer = asyncio.create_task(self._produce())
        return self.port

    async def stop(self) -> None:
        """Stop playing and close every connection."""
        if self._producer is not None:
            self._producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._producer
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def stats(self) -> SimulatorStats:
        """A copy of the simulator's counters."""
        return SimulatorStats(
            played=self._played,
            total=len(self.tape),
            frames_sent=self._frames_sent,
            connections=self._connections,
            open_connections=len(self._clients),
            drops=self._drops,
            malformed_sent=self._malformed,
            fragmented_sent=self._fragmented,
            shutdowns_sent=self._shutdowns,
            rest_calls=self._rest_calls,
            done=self.done.is_set(),
        )

    # -- playing the tape ------------------------------------------------------------

    def _lap(self, lap: int) -> Iterator[tuple[TapeEntry, Trade | None]]:
        """The tape's entries for one lap; later laps shift ids and times past the first
        (and leave out fills that are no market trades)."""
        if lap == 0:
            yield from zip(self.tape, self._parsed, strict=True)
            return
        time_span_us = (self.tape[-1].time_ms - self.tape[0].time_ms) * 1000 + 1_000_000
        id_span = {
            symbol: trades[-1].trade_id - trades[0].trade_id + 1
            for symbol, trades in self._by_symbol.items()
        }
        for trade in self._parsed:
            if trade is None:
                continue
            shifted = msgspec.structs.replace(
                trade,
                trade_id=trade.trade_id + lap * id_span[trade.symbol],
                time_us=trade.time_us + lap * time_span_us,
            )
            payload = self.codec.trade_frame(shifted)
            yield (
                TapeEntry(shifted.symbol, shifted.trade_id, shifted.time_us // 1000, payload),
                shifted,
            )

    async def _produce(self) -> None:
        loop = asyncio.get_running_loop()
        await self._have_clients.wait()  # the clock starts with the first client
        start = loop.time()
        first_ms = self.tape[0].time_ms
        lap = 0
        group: list[tuple[TapeEntry, Trade | None]] = []  # due now: sent together
        while True:
            for entry, trade in self._lap(lap):
                if self.speed is None:
                    await self._have_clients.wait()
                    await self._play([(entry, trade)])
                    continue
                due = start + (entry.time_ms - first_ms) / 1000 / self.speed
                if due > loop.time() or len(group) >= MAX_GROUP:
                    if group:
                        await self._play(group)
                        group = []
                    delay = due - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                group.append((entry, trade))
            if group:
                await self._play(group)
                group = []
            if not self.loop:
                break
            lap += 1
        self.done.set()

    async def _play(self, group: list[tuple[TapeEntry, Trade | None]]) -> None:
        """Send trades that are due together (a burst) to every client of their stream."""
        for entry, trade in group:
            if trade is not None:
                played = self._trades[entry.symbol]
                played.append(trade)
                if len(played) > 2 * REST_HISTORY:  # bounded, however long it loops
                    del played[:-REST_HISTORY]
            self._played += 1
            self._recent.append(entry)
        f = self.faults
        per_frame = (f.drop_every, f.malformed_every, f.huge_every, f.fragment_every)
        one_by_one = len(group) == 1 or any(per_frame) or f.stall_after or f.shutdown_after
        for client in list(self._clients):
            mine = [
                (entry, stream)
                for entry, _ in group
                if (stream := self.codec.stream_name(entry.symbol)) in client.streams
            ]
            if one_by_one:
                for entry, stream in mine:
                    await self._deliver(client, entry, stream)
            elif mine:
                await self._deliver_burst(client, mine)

    async def _deliver_burst(self, client: _Client, burst: list[tuple[TapeEntry, str]]) -> None:
        """Frames due at the same moment in one write, as an exchange's server sends a
        burst (no per-frame faults are configured): one system call, not one each."""
        ws = client.ws
        if ws.protocol.state is not State.OPEN:
            self._forget(client)
            return
        for entry, stream in burst:
            ws.protocol.send_text(self._frame(client, entry, stream))
        ws.transport.write(b"".join(ws.protocol.data_to_send()))
        client.sent += len(burst)
        self._frames_sent += len(burst)
        if self.sent_at is not None:
            now = time.time_ns()
            for entry, _ in burst:
                self.sent_at.setdefault(entry_id(entry), now)
        # a slow client: wait for room, as a single send would
        while ws.transport.get_write_buffer_size() > MAX_BUFFERED:
            if ws.protocol.state is not State.OPEN:
                self._forget(client)
                return
            await asyncio.sleep(0.001)

    def _frame(self, client: _Client, entry: TapeEntry, stream: str) -> bytes:
        if client.combined:
            return b'{"stream":"' + stream.encode() + b'","data":' + entry.payload + b"}"
        return entry.payload

    async def _deliver(self, client: _Client, entry: TapeEntry, stream: str) -> None:
        faults = self.faults
        if client.stalled:
            return
        try:
            if faults.huge_every and (client.sent + 1) % faults.huge_every == 0:
                await client.ws.send(b'{"junk":"' + b"x" * (2 << 20) + b'"}', text=True)
                self._malformed += 1
            if faults.malformed_every and (client.sent + 1) % faults.malformed_every == 0:
                await client.ws.send(BAD_FRAMES[self._malformed % len(BAD_FRAMES)], text=True)
                self._malformed += 1
            frame = self._frame(client, entry, stream)
            if faults.fragment_every and (client.sent + 1) % faults.fragment_every == 0:
                await client.ws.send(_fragments(frame, FRAGMENTS), text=True)
                self._fragmented += 1
            else:
                await client.ws.send(frame, text=True)
        except ConnectionClosed:
            self._forget(client)
            return
        client.sent += 1
        self._frames_sent += 1
        if self.sent_at is not None:
            self.sent_at.setdefault(entry_id(entry), time.time_ns())
        if faults.stall_after and client.sent == faults.stall_after:
            client.stalled = True  # a half-dead connection: open, answering pings, silent
        if faults.shutdown_after and client.sent == faults.shutdown_after:
            await self._announce_shutdown(client)
        if faults.drop_every and client.sent % faults.drop_every == 0:
            self._drops += 1
            self._forget(client)
            # abrupt, as a network failure: no close handshake
            client.ws.transport.abort()

    async def _announce_shutdown(self, client: _Client) -> None:
        notice = self.codec.shutdown_frame()
        if notice is not None:  # a venue without a notice just closes after the grace
            with contextlib.suppress(ConnectionClosed):
                await client.ws.send(notice, text=True)
            self._shutdowns += 1

        async def close_later() -> None:
            await asyncio.sleep(self.faults.shutdown_grace)
            self._forget(client)
            with contextlib.suppress(Exception):
                await client.ws.close(1001, "server shutdown")

        task = asyncio.create_task(close_later())
        task.add_done_callback(lambda _t: None)

    def _forget(self, client: _Client) -> None:
        self._clients.discard(client)
        self._update_listening()

    def _update_listening(self) -> None:
        """The tape plays (at max speed: only) while some client is subscribed to a stream."""
        if any(c.streams for c in self._clients):
            self._have_clients.set()
        else:
            self._have_clients.clear()

    # -- WebSocket connections ---------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        url = urlsplit(ws.request.path if ws.request else "/")
        route = self._route(url.path.rstrip("/"))
        if route is None:
            await ws.close(1008, "unknown path")
            return
        prefix, rest = route
        combined = prefix.endswith("/stream")  # else a raw /ws route: streams in the path
        names = parse_qs(url.query).get("streams", [""])[0] if combined else rest
        streams = {s.lower() for s in names.split("/") if s}
        client = _Client(ws, streams, combined)
        self._connections += 1
        stream_of = self.codec.stream_name
        for entry in list(self._recent)[-self.faults.resend_on_connect or len(self._recent) :]:
            if self.faults.resend_on_connect and stream_of(entry.symbol) in streams:
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(self._frame(client, entry, stream_of(entry.symbol)), text=True)
        self._clients.add(client)
        self._update_listening()
        try:
            async for message in ws:
                reply = self._control(client, message)
                if reply is not None:
                    await ws.send(msgspec.json.encode(reply), text=True)
        except ConnectionClosed:
            pass
        finally:
            self._forget(client)

    def _route(self, path: str) -> tuple[str, str] | None:
        """The codec's WebSocket route ``path`` is under, and what follows it, or None."""
        for prefix in self.codec.ws_routes:
            if path == prefix or path.startswith(prefix + "/"):
                return prefix, path[len(prefix) + 1 :]
        return None

    def _control(self, client: _Client, message: str | bytes) -> dict[str, object] | None:
        try:
            request = msgspec.json.decode(message)
        except msgspec.DecodeError:
            return {"code": 3, "msg": "Invalid JSON: expected an object"}
        if not isinstance(request, dict):
            return {"code": 3, "msg": "Invalid JSON: expected an object"}
        req_id = request.get("id")
        method = request.get("method")
        params = request.get("params", [])
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            return {
                "code": 2,
                "msg": "Invalid request: params must be a list of strings",
                "id": req_id,
            }
        if method == "SUBSCRIBE":
            client.streams.update(p.lower() for p in params)
            self._update_listening()
            return {"result": None, "id": req_id}
        if method == "UNSUBSCRIBE":
            client.streams.difference_update(p.lower() for p in params)
            self._update_listening()
            return {"result": None, "id": req_id}
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": sorted(client.streams), "id": req_id}
        return {"code": 2, "msg": f"Invalid request: unknown method {method!r}", "id": req_id}

    # -- REST ------------------------------------------------------------------------

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        self._rest_calls += 1
        log.debug("REST %s", request.path)
        url = urlsplit(request.path)
        codec = self.codec
        historical = url.path == codec.historical_trades_path
        if historical and codec.api_key_header and not request.headers.get(codec.api_key_header):
            # Binance's reply to a MARKET_DATA call without a key (error code -2014)
            # https://developers.binance.com/docs/derivatives/usds-margined-futures/error-code
            return _json(401, {"code": -2014, "msg": "API-key format invalid."})
        if self._rest_failures and historical:
            status = self._rest_failures.popleft()
            headers = (
                [("Retry-After", str(self.faults.retry_after))] if status in (418, 429) else []
            )
            return _json(status, {"code": -1003, "msg": "Simulated failure."}, headers)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        weight = [("X-MBX-USED-WEIGHT-1M", str(self._rest_calls))]
        if self._bad_replies and historical:
            return self._bad_reply(self._bad_replies.popleft(), query, weight)
        if url.path == codec.ping_path:
            return _json(200, {}, weight)
        if url.path == codec.time_path:
            return _json(200, {"serverTime": int(time.time() * 1000)}, weight)
        if url.path == codec.exchange_info_path:
            return _json(200, self._exchange_info(), weight)
        if historical or url.path == codec.recent_trades_path:
            return self._rest_trades(historical, query, weight)
        return _json(404, {"code": -1000, "msg": "Unknown endpoint."})

    def _exchange_info(self) -> dict[str, object]:
        now_ms = int(time.time() * 1000)
        symbols = sorted(self._trades)
        # a codec may describe its venue's reply (the Binance codecs do); else a minimal one
        describe = getattr(self.codec, "exchange_info", None)
        if describe is not None:
            info: dict[str, object] = describe(symbols, now_ms)
            return info
        return {
            "serverTime": now_ms,
            "symbols": [{"symbol": s, "status": "TRADING"} for s in symbols],
        }

    def _rest_trades(
        self, historical: bool, query: dict[str, str], weight: Sequence[tuple[str, str]]
    ) -> Response:
        symbol = query.get("symbol", "").upper()
        if symbol not in self._trades:
            return _json(400, {"code": -1121, "msg": "Invalid symbol."})
        try:
            limit = int(query.get("limit", "500"))
            from_id = int(query["fromId"]) if "fromId" in query else None
        except ValueError:
            return _json(400, {"code": -1100, "msg": "Illegal characters found in a parameter."})
        if not 1 <= limit <= 1000:
            return _json(400, {"code": -1100, "msg": "limit must be between 1 and 1000."})
        played = self._trades[symbol]
        if historical and from_id is not None:
            start = _first_at_or_after(played, from_id)
            chosen = played[start : start + limit]
        else:
            chosen = played[-limit:]
        return _json(200, list(map(self.codec.rest_trade, chosen)), weight)

    def _bad_reply(
        self, kind: str, query: dict[str, str], weight: Sequence[tuple[str, str]]
    ) -> Response:
        """A 200 reply of ``kind`` (see :data:`BAD_REPLIES`) to a historicalTrades call."""
        raw: bytes | None = {
            "html": b"<html><head><title>502 Bad Gateway</title></head><body></body></html>",
            "garbage": b"\x00\x9f\x92 not json {[",
            "empty": b"",
        }.get(kind)
        if raw is not None:
            kind_type = "text/html" if kind == "html" else "application/json"
            headers = Headers([("Content-Type", kind_type), ("Content-Length", str(len(raw)))])
            return Response(200, "OK", headers, raw)
        if kind == "empty_list":
            return _json(200, [], weight)
        if kind == "error_object":
            return _json(200, {"code": -1003, "msg": "Simulated error."}, weight)
        played = self._trades.get(query.get("symbol", "").upper(), [])
        start = _first_at_or_after(played, int(query.get("fromId", "0")))
        limit = int(query.get("limit", "500"))
        if kind == "wrong_id":
            chosen = played[start + 10 : start + 10 + limit]
        else:  # a hole: the second trade left out
            chosen = played[start : start + 1] + played[start + 2 : start + limit]
        return _json(200, list(map(self.codec.rest_trade, chosen)), weight)


def entry_id(entry: TapeEntry) -> int:
    """The trade id of a tape entry."""
    return entry.trade_id


def _first_at_or_after(trades: Sequence[Trade], trade_id: int) -> int:
    lo, hi = 0, len(trades)
    while lo < hi:
        mid = (lo + hi) // 2
        if trades[mid].trade_id < trade_id:
            lo = mid + 1
        else:
            hi = mid
    return lo


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
