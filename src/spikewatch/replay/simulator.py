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
answer them with 200 replies that cannot be used, lower Binance's limits.

A whole market: the tape may be a :class:`~spikewatch.replay.market.MarketTape` (N symbols
re-labelled from real recordings, made as they play). Binance's connection and request
limits are enforced as Binance enforces them (:mod:`spikewatch.replay.limits`): streams
per connection, incoming messages per second, connection attempts per IP, REST request
weight per IP and minute (``X-MBX-USED-WEIGHT-1M``, 429 with ``Retry-After``, then 418).

Listing and delisting while running: :meth:`Simulator.list_symbol`, :meth:`~Simulator.delist`
and :meth:`~Simulator.halt` (thread-safe through :class:`SimulatorThread`), and for other
processes the control routes on the simulator's own port (no body; 200 with the symbol's
exchangeInfo row, 400 with ``{"error": ...}``, 405 for another method):

* ``POST /sim/list?symbol=NEWUSDT[&like=BTCUSDT]``: ``NEWUSDT`` starts trading now, a
  re-labelled copy of ``like``'s recording (default: the first symbol's) with its own ids;
  a halted or delisted symbol trades again, its ids going on where they stopped.
* ``POST /sim/delist?symbol=X``: ``X`` stops trading (no more frames; REST still serves
  what it traded) and stays in exchangeInfo with the venue's delisted status, as Binance
  keeps a delisted spot pair listed in ``BREAK`` (USD-M: ``SETTLING``).
* ``POST /sim/halt?symbol=X``: the same, status ``HALT`` (USD-M: ``SETTLING``).
* ``GET /sim/stats``: the simulator's counters (:class:`SimulatorStats`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from urllib.parse import parse_qs, urlsplit

import msgspec
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import State

from spikewatch.core.model import Trade
from spikewatch.exchanges.base import Control, SimulatorCodec
from spikewatch.exchanges.binance import BinanceSpot
from spikewatch.replay.limits import (
    ConnectGate,
    LimitedConnection,
    RateWindow,
    VenueLimits,
    WeightLedger,
)
from spikewatch.replay.market import (
    Listing,
    MarketTape,
    Mixer,
    Played,
    Source,
    listing_like,
    split_symbol,
)
from spikewatch.replay.market import (
    stream as symbol_stream,
)
from spikewatch.replay.sim_faults import (
    BAD_FRAMES,
    FRAGMENTS,
    Faults,
    SimulatorStats,
    fragments,
)
from spikewatch.replay.sim_rest import (
    BAD_REPLIES,
    bad_reply,
    connection_refusal,
    json_reply,
    refusal,
    trades_reply,
)
from spikewatch.replay.sim_thread import SimulatorThread
from spikewatch.replay.tape import TapeEntry

__all__ = [
    "BAD_FRAMES",
    "BAD_REPLIES",
    "FRAGMENTS",
    "Faults",
    "Simulator",
    "SimulatorStats",
    "SimulatorThread",
]


log = logging.getLogger(__name__)

#: Trades due at the same moment sent in one write, at most.
MAX_GROUP = 1024
#: Trades played at full speed between two turns given to the rest of the event loop.
YIELD_EVERY = 64
#: Bytes waiting in a client's send buffer beyond which the simulator waits for it.
MAX_BUFFERED = 1 << 20

#: Trades per symbol the REST endpoints can still serve (older ones are forgotten).
REST_HISTORY = 500_000

#: Trades per symbol of a market the REST endpoints can still serve, at least.
MARKET_REST_HISTORY = 1000

#: Where the simulator's own control routes live on its port.
CONTROL_PREFIX = "/sim/"


class _Client:
    __slots__ = ("combined", "sent", "stalled", "streams", "ws")

    def __init__(self, ws: ServerConnection, streams: set[str], combined: bool) -> None:
        self.ws = ws
        self.streams = streams
        self.combined = combined
        self.sent = 0
        self.stalled = False


class _TooManyStreams(Exception):
    """A SUBSCRIBE would take a connection past its stream limit."""


class Simulator:
    """Serves ``tape`` over WebSocket and REST on 127.0.0.1; see the module docstring."""

    def __init__(
        self,
        tape: Sequence[TapeEntry] | MarketTape,
        *,
        codec: SimulatorCodec | None = None,
        speed: float | None = None,
        faults: Faults | None = None,
        loop: bool = False,
        seed: int = 0,
    ) -> None:
        if speed is not None and speed <= 0:
            raise ValueError("speed must be > 0, or None for as fast as clients read")
        if not tape:
            raise ValueError("the tape holds no trades")
        self.tape = tape
        self.codec: SimulatorCodec = codec or BinanceSpot().simulator_codec()
        self.speed = speed
        self.loop = loop  # play the tape again and again, ids and times moved on each lap
        self.seed = seed  # phases and ids of symbols listed while running
        #: when set (a dict), the wall-clock ns at which each trade id was first sent
        self.sent_at: dict[int, int] | None = None
        self.faults = f = faults or Faults()
        self.limits = VenueLimits.of(
            self.codec,
            max_streams=f.max_streams,
            max_messages_per_s=f.max_messages_per_s,
            max_connects_per_5min=f.max_connects_per_5min,
            weight_limit=f.max_weight_per_min,
            ban_after=f.ban_after,
        )
        self._gate = ConnectGate(self.limits.max_connects_per_5min)
        self._ledger = WeightLedger(self.limits.weight_limit, self.limits.ban_after)
        self._clients: set[_Client] = set()
        self._have_clients = asyncio.Event()
        self._listed = asyncio.Event()  # a symbol was listed: the mixer has a new stream
        self._played = 0
        self._frames_sent = 0
        self._connections = 0
        self._drops = 0
        self._malformed = 0
        self._fragmented = 0
        self._shutdowns = 0
        self._rest_calls = 0
        # limits: connections closed or refused, REST requests refused
        self._limit_disconnects = 0
        self._refused = 0
        self._too_many_streams = 0
        self._rate_limited = 0
        self._banned = 0
        self._rest_failures = deque(self.faults.rest_failures)
        unknown = set(self.faults.bad_replies) - set(BAD_REPLIES)
        if unknown:
            raise ValueError(f"unknown bad_replies {sorted(unknown)}: use {BAD_REPLIES}")
        self._bad_replies = deque(self.faults.bad_replies)
        self._recent: deque[TapeEntry] = deque(maxlen=max(1, self.faults.resend_on_connect))
        self.done = asyncio.Event()
        self._server: Server | None = None
        self._producer: asyncio.Task[None] | None = None
        # per symbol: trades in id order, for REST; filled as the tape plays
        self._trades: dict[str, list[Trade]] = {}
        # None: a recorded fill that is no market trade (a futures insurance fund or ADL
        # fill): streamed as recorded, but not in REST replies (Binance leaves them out)
        self._parsed: list[Trade | None] = []
        self._by_symbol: dict[str, list[Trade]] = {}
        # what symbols listed while running play: a market's sources, or recorded ones
        self._sources: list[Source] = []
        self._source_of: dict[str, tuple[int, Listing | None]] = {}
        self._mixer = Mixer()
        if isinstance(tape, MarketTape):
            self._sources = list(tape.sources)
            for listing in tape.listings:
                self._source_of[listing.symbol] = (listing.source, listing)
            self._assets = {item.symbol: (item.base, item.quote) for item in tape.listings}
            self._first_ms = tape.first_ms
            self._history = max(MARKET_REST_HISTORY, REST_HISTORY // len(tape.listings))
            for symbol, played in tape.streams(endless=loop, encode=self.codec.trade_frame):
                self._mixer.add(played, [symbol])
            symbols = tape.symbols
        else:
            self._parse(tape)
            symbols = list(self._by_symbol)
            self._assets = {s: pair for s in symbols if (pair := split_symbol(s))[1]}
            self._first_ms = tape[0].time_ms
            self._history = REST_HISTORY
            self._mixer.add(self._laps(), self._by_symbol)
        self._mixer.clock_ms = self._first_ms - 1  # a symbol listed now starts with the tape
        self._states = dict.fromkeys(symbols, "trading")
        self._trades = {symbol: [] for symbol in symbols}
        self.port = 0

    def _parse(self, tape: Sequence[TapeEntry]) -> None:
        """Parse a recorded tape's trades, for REST replies and later laps."""
        # Binance's spot and futures @trade events decode alike (the venue name is unused)
        parser = BinanceSpot()
        for entry in tape:
            trade = parser.parse(entry.payload)
            if trade is Control.IGNORED:
                self._parsed.append(None)
                continue
            if not isinstance(trade, Trade):
                raise ValueError(f"tape entry is not a trade: {entry.payload[:80]!r}")
            self._parsed.append(trade)
            self._by_symbol.setdefault(entry.symbol, []).append(trade)
        if not self._by_symbol:
            raise ValueError("the tape holds no trades")

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port`` (0 = any free port) and start playing; returns the port."""
        self._server = await serve(
            self._handle,
            host,
            port,
            process_request=self._process_request,
            create_connection=LimitedConnection,
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
            limit_disconnects=self._limit_disconnects,
            refused_connections=self._refused,
            too_many_streams=self._too_many_streams,
            rate_limited=self._rate_limited,
            banned=self._banned,
            trading=sum(state == "trading" for state in self._states.values()),
        )

    # -- listing and delisting ---------------------------------------------------------

    def symbol_states(self) -> dict[str, str]:
        """Every symbol listed so far: "trading", "halted" or "delisted"."""
        return dict(self._states)

    def list_symbol(self, symbol: str, like: str | None = None) -> None:
        """List ``symbol``: it trades from now on, a re-labelled copy of ``like``'s
        recording (default: its own if it traded before, else the first symbol's), with
        its own ids (going on where they stopped for a symbol listed before). Call it on
        the simulator's loop (:meth:`SimulatorThread.list_symbol` from other threads)."""
        symbol = symbol.upper()
        if not symbol.isalnum():
            raise ValueError(f"bad symbol {symbol!r}: letters and digits only")
        state = self._states.get(symbol)
        if state == "trading":
            raise ValueError(f"{symbol} is trading already")
        index, template = self._source_for((like or "").upper() or (symbol if state else None))
        played = self._trades.get(symbol)
        listing = listing_like(
            symbol,
            index,
            self._sources[index],
            seed=self.seed,
            first_id=played[-1].trade_id + 1 if played else None,
            template=template,
        )
        start_us = (self._mixer.clock_ms + 1) * 1000
        trades = symbol_stream(
            self._sources[index],
            listing,
            start_us,
            endless=self.loop,
            encode=self.codec.trade_frame,
        )
        self._mixer.add(trades, [symbol])
        self._listed.set()
        self._states[symbol] = "trading"
        self._trades.setdefault(symbol, [])
        if listing.quote and symbol not in self._assets:
            self._assets[symbol] = (listing.base, listing.quote)
        log.info("listed %s (like %s)", symbol, self._sources[index].name)

    def _source_for(self, name: str | None) -> tuple[int, Listing | None]:
        """The source a symbol listed like ``name`` plays (None: the first symbol's)."""
        if name is None:
            name = next(iter(self._source_of), None) or next(iter(self._by_symbol))
        if name in self._source_of:
            return self._source_of[name]
        if name not in self._by_symbol:
            raise ValueError(f"unknown symbol {name!r} to list like")
        self._sources.append(Source.of(self._by_symbol[name]))
        self._source_of[name] = (len(self._sources) - 1, None)
        return self._source_of[name]

    def delist(self, symbol: str) -> None:
        """``symbol`` stops trading and shows the venue's delisted status."""
        self._stop(symbol, "delisted")

    def halt(self, symbol: str) -> None:
        """``symbol`` stops trading and shows the venue's halted status."""
        self._stop(symbol, "halted")

    def _stop(self, symbol: str, state: str) -> None:
        symbol = symbol.upper()
        if symbol not in self._states:
            raise ValueError(f"unknown symbol {symbol!r}")
        self._states[symbol] = state
        self._mixer.stop(symbol)
        log.info("%s %s", state, symbol)

    # -- playing the tape ------------------------------------------------------------

    def _laps(self) -> Iterator[Played]:
        """A recorded tape's entries: one lap, or lap after lap when looping."""
        lap = 0
        while True:
            yield from self._lap(lap)
            if not self.loop:
                return
            lap += 1

    def _lap(self, lap: int) -> Iterator[Played]:
        """The tape's entries for one lap; later laps shift ids and times past the first
        (and leave out fills that are no market trades)."""
        tape = self.tape
        assert not isinstance(tape, MarketTape)
        if lap == 0:
            yield from zip(tape, self._parsed, strict=True)
            return
        time_span_us = (tape[-1].time_ms - tape[0].time_ms) * 1000 + 1_000_000
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
        first_ms = self._first_ms
        group: list[Played] = []  # due now: sent together
        while True:
            self._listed.clear()
            # the mixer merges the tape (or the market's symbols) with symbols listed since
            for count, played in enumerate(self._mixer):
                if count % YIELD_EVERY == 0:
                    # a client that reads as fast as it is sent to never makes a send
                    # wait, and a halted symbol's entries are skipped without any: let
                    # REST, control routes and other connections have the loop too
                    await asyncio.sleep(0)
                if played is None:
                    continue  # a trade of a symbol that no longer trades
                entry, trade = played
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
            # looping, and every symbol halted or delisted: on when one is listed again
            await self._listed.wait()
        self.done.set()

    async def _play(self, group: list[tuple[TapeEntry, Trade | None]]) -> None:
        """Send trades that are due together (a burst) to every client of their stream."""
        for entry, trade in group:
            if trade is not None:
                played = self._trades[entry.symbol]
                played.append(trade)
                if len(played) > 2 * self._history:  # bounded, however long it loops
                    del played[: -self._history]
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
                await client.ws.send(fragments(frame, FRAGMENTS), text=True)
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
        if self.limits.max_streams and len(streams) > self.limits.max_streams:
            self._too_many_streams += 1
            await ws.close(CloseCode.POLICY_VIOLATION, "Too many streams")
            return
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
                try:
                    reply = self._control(client, message)
                except _TooManyStreams:
                    # Binance disconnects a connection that asks for more streams
                    self._too_many_streams += 1
                    self._forget(client)
                    await ws.close(CloseCode.POLICY_VIOLATION, "Too many streams")
                    return
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
            wanted = client.streams | {p.lower() for p in params}
            if self.limits.max_streams and len(wanted) > self.limits.max_streams:
                raise _TooManyStreams
            client.streams = wanted
            self._update_listening()
            return {"result": None, "id": req_id}
        if method == "UNSUBSCRIBE":
            client.streams.difference_update(p.lower() for p in params)
            self._update_listening()
            return {"result": None, "id": req_id}
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": sorted(client.streams), "id": req_id}
        return {"code": 2, "msg": f"Invalid request: unknown method {method!r}", "id": req_id}

    def _count_limit_disconnect(self) -> None:
        self._limit_disconnects += 1

    # -- REST ------------------------------------------------------------------------

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        now = time.monotonic()
        remote = ws.remote_address
        ip = str(remote[0]) if remote else ""
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if not self._gate.admit(ip, now):
                self._refused += 1
                return connection_refusal()
            if isinstance(ws, LimitedConnection) and self.limits.max_messages_per_s:
                ws.meter = RateWindow(self.limits.max_messages_per_s, 1.0)
                ws.clock = time.monotonic
                ws.on_violation = self._count_limit_disconnect
            return None
        log.debug("%s %s", request.method, request.path)
        url = urlsplit(request.path)
        if url.path.startswith(CONTROL_PREFIX):
            return self._control_route(request.method, url.path, url.query)
        self._rest_calls += 1
        verdict = self._ledger.charge(
            ip, self.limits.weight(url.path), now, int(time.time() * 1000)
        )
        weight = [("X-MBX-USED-WEIGHT-1M", str(verdict.used))]
        if verdict.status != 200:
            if verdict.status == 418:
                self._banned += 1
            else:
                self._rate_limited += 1
            return refusal(verdict, self.limits.weight_limit, weight)
        codec = self.codec
        historical = url.path == codec.historical_trades_path
        if historical and codec.api_key_header and not request.headers.get(codec.api_key_header):
            # Binance's reply to a MARKET_DATA call without a key (error code -2014)
            # https://developers.binance.com/docs/derivatives/usds-margined-futures/error-code
            return json_reply(401, {"code": -2014, "msg": "API-key format invalid."}, weight)
        if self._rest_failures and historical:
            status = self._rest_failures.popleft()
            headers = [*weight]
            if status in (418, 429):
                headers.append(("Retry-After", str(self.faults.retry_after)))
            return json_reply(status, {"code": -1003, "msg": "Simulated failure."}, headers)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if self._bad_replies and historical:
            played = self._trades.get(query.get("symbol", "").upper(), [])
            kind = self._bad_replies.popleft()
            return bad_reply(kind, played, query, codec.rest_trade, weight)
        if url.path == codec.ping_path:
            return json_reply(200, {}, weight)
        if url.path == codec.time_path:
            return json_reply(200, {"serverTime": int(time.time() * 1000)}, weight)
        if url.path == codec.exchange_info_path:
            return json_reply(200, self._exchange_info(), weight)
        if historical or url.path == codec.recent_trades_path:
            played_or_none = self._trades.get(query.get("symbol", "").upper())
            return trades_reply(played_or_none, historical, query, codec.rest_trade, weight)
        return json_reply(404, {"code": -1000, "msg": "Unknown endpoint."}, weight)

    def _exchange_info(self, only: Sequence[str] = ()) -> dict[str, object]:
        now_ms = int(time.time() * 1000)
        symbols = list(only) or sorted(self._states)
        # a codec may describe its venue's reply (the Binance codecs do); else a minimal one
        describe = getattr(self.codec, "exchange_info", None)
        if describe is not None:
            info: dict[str, object] = describe(
                symbols, now_ms, states=self._states, assets=self._assets
            )
            return info
        return {
            "serverTime": now_ms,
            "symbols": [{"symbol": s, "status": self._states[s].upper()} for s in symbols],
        }

    def _control_route(self, method: str, path: str, query: str) -> Response:
        """The simulator's own routes (see the module docstring)."""
        action = path[len(CONTROL_PREFIX) :].rstrip("/")
        if action == "stats":
            return json_reply(200, msgspec.to_builtins(self.stats()))
        actions: dict[str, Callable[[str], None]] = {
            "list": lambda symbol: self.list_symbol(symbol, args.get("like")),
            "delist": self.delist,
            "halt": self.halt,
        }
        if action not in actions:
            return json_reply(404, {"error": f"no control route {path!r}"})
        if method != "POST":
            return json_reply(405, {"error": f"{path} takes POST"}, [("Allow", "POST")])
        args = {k: v[-1] for k, v in parse_qs(query).items()}
        symbol = args.get("symbol", "").upper()
        if not symbol:
            return json_reply(400, {"error": "symbol=... is required"})
        try:
            actions[action](symbol)
        except ValueError as exc:
            return json_reply(400, {"error": str(exc)})
        rows = self._exchange_info([symbol])["symbols"]
        return json_reply(200, rows[0] if isinstance(rows, list) else rows)


def entry_id(entry: TapeEntry) -> int:
    """The trade id of a tape entry."""
    return entry.trade_id
