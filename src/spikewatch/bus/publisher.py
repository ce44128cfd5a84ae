"""The ingest side: trades into the stream in micro-batches, acknowledged by JetStream.

Each ``(exchange, symbol)`` has a lane: its trades are buffered as columns and published
as one message of at most ``max_batch`` trades, when that many are waiting or at the next
tick (every ``max_delay`` seconds), whichever comes first. A lane has at most one message
in flight: the next one leaves when JetStream has acknowledged (stored) the last. That
keeps each symbol's trades in order in the stream even when a publish is retried after a
timeout (with several in flight, a retried message would land after its successors), and
it batches by itself: trades that arrive during one round trip leave together. Lanes run
concurrently, up to ``max_in_flight`` messages in all. (Each lane's publish is a task
awaiting its own ack, rather than nats-py's ``publish_async``, whose futures have no
order per subject to keep when one of them must be sent again.)

Back-pressure: :meth:`TradePublisher.publish` waits while more than ``max_pending`` trades
are buffered, so a stalled server slows the ingest down rather than filling memory.

Each message carries ``Nats-Msg-Id: <exchange>.<symbol>.<first id>.<last id>``: a retried
publish, or the same batch sent again after an ingest restart, is stored once (within the
stream's duplicate window). A publish that still fails after ``retries`` is fatal for the
publisher (:class:`PublishError` from every later call): going on would leave a hole in
the symbol's trades, so the ingest restarts and re-sends from what it knows was stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable

import msgspec
import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import NoStreamResponseError

from spikewatch.bus.codec import encode_columns, message_id
from spikewatch.bus.subjects import TradeSubjects
from spikewatch.core.model import Side, Trade, TradeBatch

#: Trades a message holds at most: a few hundred keeps a message ~16 KiB (well under
#: NATS's 1 MiB default max_payload) and the per-message cost small beside the trades.
MAX_BATCH = 500
#: Seconds a trade waits at most for its lane's next tick.
MAX_DELAY_S = 0.005


class PublishError(RuntimeError):
    """A batch could not be stored: the publisher stops (see the module docstring)."""


class PublisherCounters(msgspec.Struct, frozen=True):
    """What a publisher has done so far."""

    trades: int  # trades handed to publish()
    messages: int  # messages acknowledged by JetStream
    acked_trades: int  # trades in them
    duplicates: int  # messages JetStream had already stored (same Nats-Msg-Id)
    retries: int  # publishes sent again after a timeout
    failures: int  # messages given up on
    bytes: int  # payload bytes acknowledged
    pending: int  # trades buffered, not yet acknowledged
    in_flight: int  # messages awaiting their acknowledgement


class _Lane:
    """The buffered trades of one ``(exchange, symbol)``, as columns; ``head`` is the
    first not yet sent (the columns are compacted now and then, not on every send)."""

    __slots__ = (
        "busy",
        "exchange",
        "head",
        "ids",
        "makers",
        "prices",
        "qtys",
        "subject",
        "symbol",
        "times",
    )

    def __init__(self, exchange: str, symbol: str, subject: str) -> None:
        self.exchange = exchange
        self.symbol = symbol
        self.subject = subject
        self.ids: array[int] = array("q")
        self.prices: array[int] = array("q")
        self.qtys: array[int] = array("q")
        self.times: array[int] = array("q")
        self.makers = bytearray()
        self.head = 0
        self.busy = False

    def waiting(self) -> int:
        return len(self.ids) - self.head

    def cut(self, limit: int) -> tuple[array[int], array[int], array[int], array[int], bytes]:
        """Up to ``limit`` trades from the head, as columns."""
        start = self.head
        stop = min(start + limit, len(self.ids))
        taken = (
            self.ids[start:stop],
            self.prices[start:stop],
            self.qtys[start:stop],
            self.times[start:stop],
            bytes(self.makers[start:stop]),
        )
        if stop == len(self.ids):
            for column in (self.ids, self.prices, self.qtys, self.times, self.makers):
                del column[:]
            self.head = 0
        elif stop > 65536 and stop * 2 > len(self.ids):  # drop what was sent, now and then
            for column in (self.ids, self.prices, self.qtys, self.times, self.makers):
                del column[:stop]
            self.head = 0
        else:
            self.head = stop
        return taken


class TradePublisher:
    """Publishes trades to the stream of ``subjects`` (see the module docstring).

    ``stream`` (optional) is checked by JetStream on every publish
    (``Nats-Expected-Stream``). Call :meth:`start` for the ticker, :meth:`close` at the end
    (it flushes); :meth:`flush` waits until everything published so far is stored.
    """

    def __init__(
        self,
        js: JetStreamContext,
        subjects: TradeSubjects,
        *,
        stream: str | None = None,
        max_batch: int = MAX_BATCH,
        max_delay: float = MAX_DELAY_S,
        max_in_flight: int = 256,
        max_pending: int = 500_000,
        ack_timeout: float = 5.0,
        retries: int = 3,
    ) -> None:
        if max_batch < 1 or max_in_flight < 1 or max_pending < max_batch:
            raise ValueError("need max_batch >= 1, max_in_flight >= 1, max_pending >= max_batch")
        self._js = js
        self.subjects = subjects
        self.stream = stream
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.max_in_flight = max_in_flight
        self.max_pending = max_pending
        self.ack_timeout = ack_timeout
        self.retries = retries
        self._lanes: dict[tuple[str, str], _Lane] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # (held: the loop keeps weak refs)
        self._in_flight = 0
        self._turn = 0  # where the next tick starts among the lanes (fairness)
        self._ticker: asyncio.Task[None] | None = None
        self._error: PublishError | None = None
        self._changed = asyncio.Event()  # set whenever an ack (or failure) came back
        self._trades = self._messages = self._acked = self._duplicates = 0
        self._retries = self._failures = self._bytes = 0
        self._pending = 0
        #: messages acknowledged by size (trades a message): at most max_batch keys
        self.sizes: Counter[int] = Counter()
        #: called with the seconds from a message's first send to its ack (retries
        #: included) for each stored message: the ingest role's latency histogram
        self.on_ack: Callable[[float], None] | None = None

    # -- public --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the ticker that sends what waited ``max_delay``."""
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick_forever(), name="trade-publisher-tick")

    async def publish(self, items: Iterable[TradeBatch | Trade]) -> None:
        """Buffer trades (in order per symbol) for publishing; waits while more than
        ``max_pending`` are buffered. Raises PublishError once a batch was given up on."""
        self._check()
        lanes = self._lanes
        max_batch = self.max_batch
        for item in items:
            key = (item.exchange, item.symbol)
            lane = lanes.get(key)
            if lane is None:
                lane = lanes[key] = _Lane(*key, self.subjects.subject(*key))
            if type(item) is TradeBatch:
                n = len(item.trade_ids)
                lane.ids.extend(item.trade_ids)
                lane.prices.extend(item.prices)
                lane.qtys.extend(item.qtys)
                lane.times.extend(item.times_us)
                lane.makers.extend(item.buyer_is_maker)
            else:
                assert isinstance(item, Trade)
                n = 1
                lane.ids.append(item.trade_id)
                lane.prices.append(item.price)
                lane.qtys.append(item.qty)
                lane.times.append(item.time_us)
                lane.makers.append(1 if item.side is Side.SELL else 0)
            self._trades += n
            self._pending += n
            if not lane.busy and lane.waiting() >= max_batch:
                self._send(lane)
        while self._pending > self.max_pending:
            self._changed.clear()
            self._tick()  # lanes that waited for a free in-flight slot
            await self._changed.wait()
            self._check()

    async def flush(self) -> None:
        """Send everything buffered and wait until all of it is acknowledged."""
        while self._pending:
            self._check()
            self._changed.clear()
            self._tick()
            if self._pending:
                await self._changed.wait()
        self._check()

    async def close(self) -> None:
        """Flush, then stop the ticker."""
        try:
            await self.flush()
        finally:
            if self._ticker is not None:
                self._ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._ticker
                self._ticker = None

    def counters(self) -> PublisherCounters:
        """A copy of the counters."""
        return PublisherCounters(
            trades=self._trades,
            messages=self._messages,
            acked_trades=self._acked,
            duplicates=self._duplicates,
            retries=self._retries,
            failures=self._failures,
            bytes=self._bytes,
            pending=self._pending,
            in_flight=self._in_flight,
        )

    # -- sending ---------------------------------------------------------------------------

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.max_delay)
            self._tick()

    def _tick(self) -> None:
        """Send every idle lane's waiting trades (as many as in-flight slots allow),
        starting one lane further each time, so that no lane waits on the others."""
        lanes = list(self._lanes.values())
        if not lanes:
            return
        self._turn = start = (self._turn + 1) % len(lanes)
        for lane in lanes[start:] + lanes[:start]:
            if self._in_flight >= self.max_in_flight:
                return
            if not lane.busy and lane.waiting():
                self._send(lane)

    def _send(self, lane: _Lane) -> None:
        if self._in_flight >= self.max_in_flight or self._error is not None:
            return  # the next tick (or ack) sends it
        ids, prices, qtys, times, makers = lane.cut(self.max_batch)
        payload = encode_columns(lane.exchange, lane.symbol, ids, prices, qtys, times, makers)
        msg_id = message_id(lane.exchange, lane.symbol, ids[0], ids[-1])
        lane.busy = True
        self._in_flight += 1
        task = asyncio.create_task(self._deliver(lane, payload, msg_id, len(ids)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, lane: _Lane, payload: bytes, msg_id: str, n: int) -> None:
        """Publish one message and wait for its ack, retrying timeouts with the same
        message id (JetStream drops the copy if the first one was stored after all)."""
        error: Exception | None = None
        sent_at = time.monotonic()
        try:
            for attempt in range(self.retries + 1):
                if attempt:
                    self._retries += 1
                    await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
                try:
                    ack = await self._js.publish(
                        lane.subject,
                        payload,
                        timeout=self.ack_timeout,
                        stream=self.stream,
                        headers={"Nats-Msg-Id": msg_id},
                    )
                except (nats.errors.TimeoutError, TimeoutError, NoStreamResponseError) as exc:
                    error = exc  # no answer (yet): the same message again
                    continue
                except Exception as exc:  # refused (APIError: wrong stream, too large),
                    error = exc  # the connection closed...: final
                    break
                error = None
                self._messages += 1
                self._acked += n
                self._bytes += len(payload)
                self.sizes[n] += 1
                if ack.duplicate:
                    self._duplicates += 1
                if self.on_ack is not None:
                    self.on_ack(time.monotonic() - sent_at)
                break
        finally:
            self._pending -= n
            self._in_flight -= 1
            lane.busy = False
            if error is not None:
                self._failures += 1
                self._error = PublishError(
                    f"{lane.subject}: batch {msg_id} was not stored ({type(error).__name__}: "
                    f"{error}); publishing stopped, so that no trade is skipped"
                )
            self._changed.set()
        if self._error is None and lane.waiting() >= self.max_batch:
            self._send(lane)
