"""The ``serve`` role of the distributed mode: the API, live stream and dashboard of one
exchange, read from the shared PostgreSQL store, with the live push woken by the bus.

``ServeView`` is an :class:`~spikewatch.status.EngineView` without a kernel: it detects
nothing and connects to no exchange. Any number of serve processes may run behind a load
balancer over one database; each keeps only caches (the latest spikes, recent signals,
the symbols it has seen).

**The live push.** PostgreSQL is the source of truth and of order; NATS is the wake-up.

- A *tail* thread keeps a cursor: the delivery number (the store's ``seq``) of the last
  signal it pushed. On every wake-up it reads ``store.after_seq(cursor)`` and publishes
  each row to the hub as ``Event.signal(signal, seq)``, in ``seq`` order, then moves the
  cursor to the last row read.
- The PostgreSQL store numbers signals under a lock held until commit
  (:meth:`~spikewatch.store.postgres.PostgresSignalStore.add`): a number becomes visible
  only after every smaller one. So a read after the cursor never leaves a hole behind it
  that fills later (no skip), and the cursor only moves forward (no double).
- Every serve process pushes the database's numbers, not a count of its own: an SSE
  client's ``Last-Event-ID`` means the same on every process, and a client moved to
  another process by the load balancer resumes there with ``signals_after`` (the store)
  exactly after what it saw.
- A resuming client (``web/stream.py``) is attached to the hub before
  ``last_seq()`` (``store.max_seq()``) is read; it is replayed from the store up to at
  least that number, and then gets only hub events with a greater id. Any event with a
  greater id was read from the store after that ``max_seq`` was, so after the client was
  attached: it was held for the client, and goes out once. Nothing is lost or doubled
  between the replay and the live events.
- The wake-up: a core NATS subscription on ``<bus_prefix>-signals.<exchange>.*`` (the
  subjects detect workers publish signals on, :mod:`spikewatch.bus.names`; JetStream
  delivers what it stores to plain subscribers as well). A message is decoded (a
  malformed one is counted and skipped) and wakes the tail thread. A signal heard on the
  bus may not be committed yet (a worker that publishes before its insert commits, or a
  reader's snapshot a moment old): while one is awaited, the store is read again at growing
  intervals (a quarter of the time waited, from 2 ms up to the poll interval), for up to
  :data:`WAIT_S`. Without messages the store is read every :data:`POLL_S` all the same:
  core NATS drops messages while the connection is down, and the store is complete. So
  with NATS lost the live push goes on, later (at the poll interval), and the status
  says the bus is down; nats-py reconnects by itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import msgspec

from spikewatch.alerting.pg_outbox import PostgresOutbox
from spikewatch.bus.alerts import alert_wildcard, decode_alert_event
from spikewatch.bus.names import bus_names
from spikewatch.config import Settings, resolve_profile
from spikewatch.core.alerts import AlertEvent
from spikewatch.core.bars import Bar
from spikewatch.core.model import Signal, decode_signal, iso_utc
from spikewatch.core.sequencer import MAX_AHEAD_US
from spikewatch.hub import Event, Hub
from spikewatch.ingest.client import ClientStatus, State
from spikewatch.ingest.ratelog import RateLimitedLog
from spikewatch.ingest.rest import RestStats
from spikewatch.status import (
    WRITE_BUCKETS_MS,
    AlertStatus,
    EngineStatus,
    LagHistogram,
    LiveSymbol,
    ServeStatus,
    SymbolStatus,
)
from spikewatch.store.base import SignalStore
from spikewatch.store.postgres import PostgresSignalStore, redact_url
from spikewatch.store.recent import RecentSignals
from spikewatch.store.spikes import latest_spike
from spikewatch.store.writer import WriterStats
from spikewatch.wiring import alert_rules

if TYPE_CHECKING:
    from nats.aio.msg import Msg

__all__ = [
    "POLL_S",
    "WAIT_S",
    "ServeStartError",
    "ServeView",
]

log = logging.getLogger(__name__)

#: Seconds between reads of the store when the bus says nothing (the bus may be down,
#: or a message lost): the live push is never later than this behind the store.
POLL_S: Final = 1.0
#: Seconds a signal heard on the bus is waited for in the store; then it is counted as
#: unmatched (a store writer far behind, or a republished signal stored long ago).
WAIT_S: Final = 30.0
#: The shortest pause between two reads while a signal heard on the bus is awaited.
FIRST_RETRY_S: Final = 0.002
#: Seconds between the ``status`` events of the live stream.
STATUS_S: Final = 1.0
#: Rows read from the store at once.
PAGE: Final = 1000
#: Signals heard on the bus and awaited in the store, at most (the oldest give way).
MAX_WAITING: Final = 10_000
#: Ids of signals pushed lately: a bus message for one of them is not awaited (it came
#: after its signal was read from the store, or the signal was published again).
PUSHED_IDS: Final = 10_000
#: Newest stored signals looked through at start for the symbols and latest spikes.
SEED_SIGNALS: Final = 20_000
#: Signals kept in memory for history pages (as the engine keeps); fed by the live push,
#: so a page from memory is at most the push's delay behind the store.
RECENT_SIGNALS: Final = 5000

#: Alerts whose latest pushed fold is remembered (a repeat of one is not pushed again).
PUSHED_ALERTS: Final = 10_000
#: Seconds back from the last read of the alert log that the next read starts: covers a
#: worker's clock ahead or behind serve's, and a write that commits late.
ALERT_LOOKBACK_S: Final = 30.0

#: What /api/reconnect says: there is no exchange connection to renew here.
NO_RECONNECT: Final = "this role (spikewatch serve) has no exchange connection to renew"

_encode = msgspec.json.Encoder().encode


class ServeStartError(Exception):
    """The bus cannot be reached; the message names the URL, in one line."""


@dataclass(frozen=True, slots=True)
class _Exchange:
    """The exchange served (all the web layer needs of it: its name)."""

    name: str


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ServeView:
    """The runtime of ``spikewatch serve``: see the module docstring. Build, hand to
    ``create_app``, :meth:`start` once, :meth:`stop` once."""

    def __init__(
        self,
        settings: Settings,
        store: SignalStore,
        *,
        subject_prefix: str | None = None,
        subject_prefix_alerts: str | None = None,
        poll_s: float = POLL_S,
        connect_timeout: float = 5.0,
    ) -> None:
        self.store = store
        self.hub = Hub()
        # the rules detect runs (it resolves the profile as `spikewatch run` does): the
        # alert log is served when there are any, from the outbox detect writes
        settings = resolve_profile(settings, live=True)
        rules = alert_rules(settings)
        self._rules = [r.name for r in rules.rules] if rules is not None else []
        self._outbox: PostgresOutbox | None = None
        if rules is not None and isinstance(store, PostgresSignalStore):
            self._outbox = PostgresOutbox(store.connection, ())
        self.alert_subjects = alert_wildcard(
            settings.exchange, subject_prefix_alerts or bus_names(settings).alert_prefix
        )
        self._alert_sinks: tuple[Callable[[Sequence[AlertEvent]], None], ...] = ()
        # per alert id: the (last_time_us, signals) of the fold pushed last
        self._pushed_alerts: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._alerts_opened = 0
        self._alert_messages = 0
        # the alert log is read for changes since this (wall-clock seconds)
        self._alert_lock = threading.Lock()
        self._next_alert_read = 0.0  # monotonic
        self._alerts_since = time.time()
        self._started_at = self._alerts_since
        if self._outbox is not None:  # what changed just before: shown, not pushed
            for row in self._outbox.changed_since(
                settings.exchange, self._alerts_since - ALERT_LOOKBACK_S
            ):
                self._remember_alert(row.alert.id, (row.alert.last_time_us, row.alert.signals))
        self._exchange = _Exchange(settings.exchange)
        # the subjects detect workers publish signals on (bus/names.py: every role takes
        # its names from there)
        self.prefix = subject_prefix or bus_names(settings).signal_prefix
        self.subjects = f"{self.prefix}.{settings.exchange}.*"
        self.nats_url = settings.nats_url
        self.poll_s = poll_s
        self.connect_timeout = connect_timeout
        name = settings.exchange
        self._lock = threading.Lock()  # counters, caches and the waiting list
        # The cursor first, then the floor of the recent signals: every signal above the
        # floor was stored after the cursor was read, so it will be pushed (and kept).
        self._cursor = store.max_seq()
        self._store_seq = self._cursor
        newest = store.latest(exchange=name)
        self.recent = RecentSignals(
            RECENT_SIGNALS, floor=(newest.time_us, newest.id) if newest is not None else None
        )
        self._latest: dict[str, Signal | None] = {}  # by symbol; None: looked up, none
        self._latest_any: Signal | None = None
        self._latest_any_json: bytes | None = None
        seen = self._seed()
        symbols = sorted({*settings.named_symbols, *seen})
        self._symbols: tuple[str, ...] = tuple(symbols)
        # the web layer's board and symbol checks read settings.symbols: the symbols
        # known here (configured, or with stored signals)
        self.settings = (
            msgspec.structs.replace(settings, symbols=self._symbols) if symbols else settings
        )
        self._listeners: tuple[Callable[[Signal], None], ...] = ()
        self._waiting: OrderedDict[str, float] = OrderedDict()  # id -> monotonic heard
        self._pushed_ids: OrderedDict[str, None] = OrderedDict()
        self._pushed = 0
        self._by_detector: dict[str, int] = {}
        self._by_symbol: dict[str, int] = {}
        self._reads = 0
        self._store_ok = True
        self._store_error: str | None = None
        self._store_failing_since: str | None = None
        self._messages = 0
        self._malformed = 0
        self._already_pushed = 0
        self._unmatched = 0
        # the bus connection, as the web layer's ClientStatus shows a connection
        self._bus = ClientStatus(url=redact_url(self.nats_url), state="starting")
        self._ratelog = RateLimitedLog(log)
        self._wake = threading.Condition(threading.Lock())
        self._woken = False
        self._stopping = threading.Event()
        self._started = False
        self._stopped = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bus_stop: asyncio.Event | None = None
        self._bus_thread: threading.Thread | None = None
        self._tail_thread: threading.Thread | None = None

    # -- start-up ----------------------------------------------------------------------

    def _seed(self) -> set[str]:
        """The symbols of the newest stored signals of the exchange served, and their
        latest spikes (a signal stamped far in the future, an older version's junk, is
        passed over, as the engine does)."""
        name = self._exchange.name
        plausible = time.time_ns() // 1000 + MAX_AHEAD_US
        seen: set[str] = set()
        after = None
        read = 0
        while read < SEED_SIGNALS:
            page = self.store.page(exchange=name, until_us=plausible, limit=PAGE, after=after)
            for signal in page.signals:
                seen.add(signal.symbol)
                self._remember(signal)  # (spikes only; the latest of each symbol and of all)
            read += len(page.signals)
            after = page.next_cursor
            if after is None:
                break
        return seen

    def start(self) -> None:
        """Connect to the bus, then start following the store; raises
        :class:`ServeStartError` (naming the URL) when the bus does not answer."""
        with self._lock:
            if self._started:
                raise RuntimeError("the serve view was already started")
            self._started = True
        connected: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._bus_thread = threading.Thread(
            target=self._bus_main, args=(connected,), name="spikewatch-bus", daemon=True
        )
        self._bus_thread.start()
        try:
            connected.result(self.connect_timeout + 5)
        except Exception as exc:
            self._stopping.set()
            self._bus_thread.join(5)
            reason = str(exc) if isinstance(exc, ServeStartError) else _one_line(exc)
            raise ServeStartError(
                f"cannot connect to NATS at {redact_url(self.nats_url)}: {reason}"
            ) from None
        self._tail_thread = threading.Thread(
            target=self._tail_main, name="spikewatch-tail", daemon=True
        )
        self._tail_thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """End live streams, the tail thread and the bus connection (idempotent)."""
        deadline = time.monotonic() + timeout
        self.hub.close()
        self._stopping.set()
        with self._wake:
            self._woken = True
            self._wake.notify()
        loop, stop = self._loop, self._bus_stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                loop.call_soon_threadsafe(stop.set)
        for thread in (self._tail_thread, self._bus_thread):
            if thread is not None:
                thread.join(max(0.1, deadline - time.monotonic()))
        self._stopped = True

    # -- the bus (its own thread and asyncio loop) ---------------------------------------

    def _bus_main(self, connected: concurrent.futures.Future[None]) -> None:
        try:
            asyncio.run(self._bus_run(connected))
        except Exception as exc:  # never leave start() waiting
            if not connected.done():
                connected.set_exception(exc)
            else:
                log.exception("the bus thread failed")

    async def _bus_run(self, connected: concurrent.futures.Future[None]) -> None:
        # the distributed extra: imported by those who run a role only
        from nats.aio.client import Client

        self._loop = asyncio.get_running_loop()
        self._bus_stop = asyncio.Event()
        if self._stopping.is_set():
            return
        last_error: list[str] = []

        async def on_error(exc: Exception) -> None:
            last_error[:] = [_one_line(exc)]
            self._set_bus(last_error=last_error[0], failed=True)
            if connected.done():  # (a failed first connection is told once, by start)
                self._ratelog.warning("bus", f"NATS at {self._bus.url}: {last_error[0]}")

        async def on_disconnected() -> None:
            if connected.done() and not self._stopping.is_set():
                self._set_bus(state="connecting")
                log.warning(
                    "lost NATS at %s: reconnecting (history is still served)", self._bus.url
                )

        async def on_reconnected() -> None:
            self._set_bus(state="connected", reconnected=True)
            log.info("NATS at %s is back: live push woken by the bus again", self._bus.url)
            self._poke()  # what was published meanwhile was not heard: read the store

        async def on_closed() -> None:
            self._set_bus(state="stopped")

        nc = Client()
        try:
            # Reconnect for ever once connected; the first connection must succeed within
            # connect_timeout (nats-py's own loop would try for ever too, so it is cut).
            await asyncio.wait_for(
                nc.connect(
                    servers=[self.nats_url],
                    error_cb=on_error,
                    disconnected_cb=on_disconnected,
                    reconnected_cb=on_reconnected,
                    closed_cb=on_closed,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    connect_timeout=max(1, round(self.connect_timeout / 2)),
                    name="spikewatch-serve",
                ),
                self.connect_timeout,
            )
            await nc.subscribe(self.subjects, cb=self._on_message)
            if self._outbox is not None:
                await nc.subscribe(self.alert_subjects, cb=self._on_alert_message)
            await nc.flush(max(1, round(self.connect_timeout)))
        except Exception as exc:
            with contextlib.suppress(Exception):
                await nc.close()
            reason = last_error[0] if last_error else _one_line(exc)
            if isinstance(exc, TimeoutError) and not last_error:
                reason = f"no answer within {self.connect_timeout:g} s"
            connected.set_exception(ServeStartError(reason))
            return
        self._set_bus(state="connected", connected=True)
        connected.set_result(None)
        try:
            await self._bus_stop.wait()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 2.0)

    def _set_bus(
        self,
        *,
        state: State | None = None,
        last_error: str | None = None,
        failed: bool = False,
        connected: bool = False,
        reconnected: bool = False,
    ) -> None:
        with self._lock:
            bus = self._bus
            changes: dict[str, Any] = {}
            if state is not None:
                changes["state"] = state
                if state == "connected":
                    changes["connected_since"] = iso_utc(time.time_ns() // 1000)
                    changes["ever_connected"] = True
                    changes["last_error"] = None
            if connected or reconnected:
                changes["connections"] = bus.connections + 1
            if reconnected:
                changes["reconnects"] = bus.reconnects + 1
            if failed:
                changes["failed_attempts"] = bus.failed_attempts + 1
                changes["last_error"] = last_error
            self._bus = msgspec.structs.replace(bus, **changes)

    async def _on_message(self, msg: Msg) -> None:
        """A signal published on the bus: wake the tail thread to read the store."""
        try:
            signal = decode_signal(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            with self._lock:
                self._malformed += 1
            self._ratelog.warning(
                "malformed", f"not a signal on {msg.subject} (skipped): {_one_line(exc)}"
            )
            return
        with self._lock:
            self._messages += 1
            if signal.id in self._pushed_ids:
                # read from the store before its message came, or published again
                self._already_pushed += 1
                return
            if signal.id not in self._waiting:
                self._waiting[signal.id] = time.monotonic()
                if len(self._waiting) > MAX_WAITING:
                    self._waiting.popitem(last=False)
                    self._unmatched += 1
        self._poke()

    async def _on_alert_message(self, msg: Msg) -> None:
        """An alert event a detect worker stored and announced: push it (once per fold)."""
        try:
            event = decode_alert_event(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            with self._lock:
                self._malformed += 1
            self._ratelog.warning(
                "malformed", f"not an alert event on {msg.subject} (skipped): {_one_line(exc)}"
            )
            return
        with self._lock:
            self._alert_messages += 1
        if event.alert.exchange == self._exchange.name:
            self._push_alert(event)

    def _push_alert(self, event: AlertEvent) -> bool:
        """Push ``event`` to live clients and the alert sinks unless a fold as late of the
        same alert was pushed already (a repeat: announced again after a takeover, or read
        from the log first); returns whether it was pushed."""
        alert = event.alert
        fold = (alert.last_time_us, alert.signals)
        # one push at a time (the bus's thread and the tail thread both push): a later
        # fold never goes out before an earlier one it was checked against
        with self._alert_lock:
            with self._lock:
                pushed = self._pushed_alerts.get(alert.id)
                if pushed is not None and pushed >= fold:
                    return False
                self._remember_alert(alert.id, fold)
                if event.opened:
                    self._alerts_opened += 1
            self.hub.publish(Event("alert", _encode(event), None, alert.symbol, alert.exchange))
            for sink in self._alert_sinks:
                try:
                    sink((event,))
                except Exception:
                    log.exception("an alert sink failed")
        return True

    def _remember_alert(self, alert_id: str, fold: tuple[int, int]) -> None:
        """The fold of ``alert_id`` pushed last (under the lock, or before the threads)."""
        self._pushed_alerts[alert_id] = fold
        self._pushed_alerts.move_to_end(alert_id)
        if len(self._pushed_alerts) > PUSHED_ALERTS:
            self._pushed_alerts.popitem(last=False)

    def _read_alerts(self) -> None:
        """Push the alerts stored or folded into since the last read (less a margin for
        clocks and late commits): what the bus did not announce, or not yet."""
        outbox = self._outbox
        if outbox is None or time.monotonic() < self._next_alert_read:
            return  # (the tail thread wakes for every signal heard: this reads per poll)
        self._next_alert_read = time.monotonic() + self.poll_s
        started = time.time()
        since = self._alerts_since - ALERT_LOOKBACK_S
        try:
            changed = outbox.changed_since(self._exchange.name, since)
        except Exception as exc:  # the signals' read says so; this one only waits
            log.debug("reading the alert log failed: %s", _one_line(exc))
            return
        for row in changed:
            with self._lock:
                new = row.alert.id not in self._pushed_alerts
            # an alert first stored after this process started opens here (the moment to
            # notify); one older is shown as an update of what a client read before
            opened = new and row.created_at >= self._started_at - ALERT_LOOKBACK_S
            self._push_alert(AlertEvent(row.alert, opened=opened))
        if len(changed) < 1000:
            self._alerts_since = started
        else:  # more than a page changed: go on from the last one read
            self._alerts_since = changed[-1].updated_at + ALERT_LOOKBACK_S

    # -- the tail thread: the store, read after the cursor -----------------------------

    def _poke(self) -> None:
        with self._wake:
            self._woken = True
            self._wake.notify()

    def _pause(self, now: float) -> float:
        """Seconds to wait before the next read: the poll interval, or less while a
        signal heard on the bus is awaited (a quarter of the time it has waited)."""
        with self._lock:
            oldest = next(iter(self._waiting.values()), None)
        if oldest is None:
            return self.poll_s
        return min(self.poll_s, max(FIRST_RETRY_S, (now - oldest) / 4))

    def _tail_main(self) -> None:
        next_status = time.monotonic() + STATUS_S
        while not self._stopping.is_set():
            now = time.monotonic()
            pause = min(self._pause(now), max(0.0, next_status - now))
            with self._wake:
                if not self._woken:
                    self._wake.wait(pause)
                self._woken = False
            if self._stopping.is_set():
                return
            self._read()
            self._read_alerts()
            now = time.monotonic()
            if now >= next_status:
                next_status = now + STATUS_S
                try:
                    self.hub.publish(Event("status", _encode(self.live_status())))
                except Exception:
                    log.exception("the live status event failed")

    def _read(self) -> None:
        """Push every signal stored after the cursor, in delivery order."""
        name = self._exchange.name
        try:
            while True:
                rows = self.store.after_seq(self._cursor, PAGE, exchange=name)
                with self._lock:
                    self._reads += 1
                for seq, signal in rows:
                    self._push(seq, signal)
                if len(rows) < PAGE:
                    break
        except Exception as exc:
            reason = _one_line(exc)
            with self._lock:
                was_ok, self._store_ok, self._store_error = self._store_ok, False, reason
                if was_ok:
                    self._store_failing_since = iso_utc(time.time_ns() // 1000)
            if was_ok:
                log.warning(
                    "reading the store failed (retried every %g s): %s", self.poll_s, reason
                )
            return
        with self._lock:
            if not self._store_ok:
                log.info("the store answers again")
            self._store_ok, self._store_error, self._store_failing_since = True, None, None
            self._store_seq = max(self._store_seq, self._cursor)
            self._expire(time.monotonic())

    def _expire(self, now: float) -> None:
        """Let go of signals heard on the bus and awaited for longer than WAIT_S (under
        the lock)."""
        while self._waiting:
            signal_id, heard = next(iter(self._waiting.items()))
            if now - heard < WAIT_S:
                return
            del self._waiting[signal_id]
            self._unmatched += 1
            self._ratelog.warning(
                "unmatched",
                f"signal {signal_id} was published on the bus but is not in the store "
                f"after {WAIT_S:g} s",
            )

    def _push(self, seq: int, signal: Signal) -> None:
        payload = _encode(signal)
        # kept and counted before it goes out: a client that got the event and asks this
        # process at once (history, latest spike, status) finds it there
        self.recent.add(signal, payload)
        with self._lock:
            self._cursor = seq
            self._pushed += 1
            self._by_detector[signal.detector] = self._by_detector.get(signal.detector, 0) + 1
            self._by_symbol[signal.symbol] = self._by_symbol.get(signal.symbol, 0) + 1
            self._waiting.pop(signal.id, None)
            self._pushed_ids[signal.id] = None
            if len(self._pushed_ids) > PUSHED_IDS:
                self._pushed_ids.popitem(last=False)
            if signal.symbol not in self._symbols:
                self._symbols = tuple(sorted({*self._symbols, signal.symbol}))
            self._remember(signal)
        self.hub.publish(Event.signal(signal, seq, payload))
        for listener in self._listeners:
            try:
                listener(signal)
            except Exception:
                log.exception("a signal listener failed")

    def _remember(self, signal: Signal) -> None:
        """Keep ``signal`` if it is the latest spike of its symbol or of all (under the
        lock, or before the threads start)."""
        if not signal.spike:
            return  # /api/get_signal serves spikes only
        key = (signal.time_us, signal.id)
        current = self._latest.get(signal.symbol)
        if current is None or key >= (current.time_us, current.id):
            self._latest[signal.symbol] = signal
        best = self._latest_any
        if best is None or key >= (best.time_us, best.id):
            self._latest_any = signal
            self._latest_any_json = _encode(signal)

    # -- EngineView ----------------------------------------------------------------------

    @property
    def exchange(self) -> _Exchange:
        """The exchange served (``exchange`` in the settings)."""
        return self._exchange

    def add_listener(self, listener: Callable[[Signal], None]) -> None:
        """Call ``listener(signal)`` on the tail thread for every signal pushed."""
        self._listeners = (*self._listeners, listener)

    @property
    def outbox(self) -> PostgresOutbox | None:
        """The alert log detect workers write (None: no alert rules configured)."""
        return self._outbox

    def add_alert_sink(self, sink: Callable[[Sequence[AlertEvent]], None]) -> None:
        """Call ``sink(events)`` for every alert event pushed (from the bus's thread or
        the tail thread)."""
        self._alert_sinks = (*self._alert_sinks, sink)

    def request_reconnect(self) -> bool:
        """False: there is no exchange connection here (see :data:`NO_RECONNECT`)."""
        return False

    #: why /api/reconnect is refused (the web layer reads it where present)
    reconnect_refusal = NO_RECONNECT

    def symbols(self) -> tuple[str, ...]:
        """The configured symbols, those of the newest stored signals at start, and
        every symbol pushed since."""
        return self._symbols

    def latest_signal(
        self, symbol: str | None = None, exchange: str | None = None
    ) -> Signal | None:
        """The latest stored spike of ``symbol`` (or of all symbols) on the exchange
        served: from memory, else (once per known symbol) from the store."""
        name = self._exchange.name
        if exchange is not None and exchange != name:
            return None
        if symbol is None:
            return self._latest_any
        with self._lock:
            if symbol in self._latest:
                return self._latest[symbol]
            known = symbol in self._symbols
        if not known:
            return None  # the API looks in the store itself; nothing is cached for it
        plausible = time.time_ns() // 1000 + MAX_AHEAD_US
        spike = latest_spike(self.store, exchange=name, symbol=symbol, until_us=plausible)
        with self._lock:
            # a spike pushed meanwhile is newer than what the store had
            if spike is not None:
                self._remember(spike)
            else:
                self._latest.setdefault(symbol, None)
            return self._latest[symbol]

    def latest_signal_json(self) -> bytes | None:
        """The latest spike over all symbols, encoded as the API sends it."""
        return self._latest_any_json

    def bars(self, symbol: str, limit: int | None = None, exchange: str | None = None) -> list[Bar]:
        """Empty: bars are built from trades, and no trades come here."""
        return []

    def lag_histograms(self) -> dict[str, LagHistogram]:
        """Empty: no trades are received here."""
        return {}

    def write_latency(self) -> LagHistogram:
        """Empty: this role writes nothing."""
        return LagHistogram([0] * (len(WRITE_BUCKETS_MS) + 1), 0.0)

    def last_seq(self) -> int:
        """The highest delivery number stored (the database's, shared by every serve)."""
        return self.store.max_seq()

    def signals_after(self, seq: int, limit: int = 1000) -> list[tuple[int, Signal]]:
        """The exchange's signals stored after delivery number ``seq``, in order."""
        return self.store.after_seq(seq, limit, exchange=self._exchange.name)

    def _running(self) -> bool:
        thread = self._tail_thread
        return (
            self._started
            and not self._stopped
            and not self._stopping.is_set()
            and thread is not None
            and thread.is_alive()
        )

    def ready(self) -> bool:
        """Running, connected to NATS, and the last read of PostgreSQL succeeded (the
        store is read at least every ``poll_s``)."""
        return not self.not_ready_reasons()

    def not_ready_reasons(self) -> list[str]:
        """Why this process is not ready, one reason per unmet condition."""
        reasons = []
        with self._lock:
            bus, store_ok, error = self._bus, self._store_ok, self._store_error
        if not self._running():
            reasons.append("serve not running")
        if bus.state != "connected":
            reasons.append(f"NATS at {bus.url} not connected (state: {bus.state})")
        if not store_ok:
            reasons.append(f"PostgreSQL not answering: {error}")
        return reasons

    def status(self) -> EngineStatus:
        """An honest snapshot for a role without ingest: ``connection`` is the NATS
        connection (the live feed of this role), per symbol only what is pushed."""
        running = self._running()
        with self._lock:
            bus = self._bus if running else msgspec.structs.replace(self._bus, state="stopped")
            serve = ServeStatus(
                bus_url=bus.url,
                bus_subjects=self.subjects,
                bus_connected=bus.state == "connected",
                bus_reconnects=bus.reconnects,
                bus_messages=self._messages,
                bus_malformed=self._malformed,
                bus_already_pushed=self._already_pushed,
                pushed=self._pushed,
                pushed_seq=self._cursor,
                store_seq=self._store_seq,
                store_reads=self._reads,
                store_ok=self._store_ok,
                store_error=self._store_error,
                waiting=len(self._waiting),
                unmatched=self._unmatched,
            )
            by_symbol = dict(self._by_symbol)
            by_detector = dict(self._by_detector)
            store_ok, store_error = self._store_ok, self._store_error
            failing_since = self._store_failing_since
            # the rules detect runs, and the alerts opened that this process pushed
            alerts = (
                AlertStatus(list(self._rules), self._alerts_opened, None)
                if self._outbox is not None
                else None
            )
        name = self._exchange.name
        symbols = {
            symbol: SymbolStatus(
                exchange=name,
                symbol=symbol,
                connection=bus.state,
                trades=0,
                signals=by_symbol.get(symbol, 0),
                warmed_up=True,  # no window here: nothing to warm up
                last_trade_id=None,
                last_trade_time=None,
                last_price=None,
                duplicates_dropped=0,
                gaps=0,
                missing_trades=0,
                reconnects=bus.reconnects,
                malformed_frames=serve.bus_malformed,
                backfilling=False,
                backfills=0,
                backfilled_trades=0,
                gap_records=0,
                watchdog_resubscribes=0,
            )
            for symbol in self._symbols
        }
        return EngineStatus(
            running=running,
            exchange=name,
            url=bus.url,
            connection=bus,
            connections=[],
            frames=serve.bus_messages,
            malformed_frames={"not_a_signal": serve.bus_malformed} if serve.bus_malformed else {},
            ignored_frames=0,
            symbols=symbols,
            store=WriterStats(
                0,
                0,
                0,
                0,
                0,
                None,
                healthy=store_ok,
                failing_since=failing_since,
                last_error=store_error,
            ),
            signals_by_detector=by_detector,
            stream=self.hub.stats(),
            rest=RestStats(0, 0, 0, 0, 0),
            recent_gaps=[],
            restored_from_checkpoint=[],
            serve=serve,
            alerts=alerts,
        )

    def live_status(self) -> list[LiveSymbol]:
        """Per symbol, for the live stream's ``status`` event: the bus state and the
        signals pushed (no prices, trades or bars here)."""
        status = self.status()
        return [
            LiveSymbol(
                symbol=s.symbol,
                connection=s.connection,
                last_price=None,
                trades=0,
                trades_per_s=0.0,
                signals=s.signals,
                bar=None,
                exchange=s.exchange,
            )
            for s in status.symbols.values()
        ]
