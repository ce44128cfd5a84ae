"""The engine's recovery: checkpoints, warm start, catch-up after a reconnect, gap
backfill and the watchdog.

A part of :class:`~spikewatch.engine.Engine` (a mixin: it works on the engine's state,
declared below, on the engine's event loop and under its lock); kept apart so that the
engine module is the runtime's wiring and hot path, and this one what happens when
trades are missing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from functools import partial

import msgspec

from spikewatch.alerting.pipeline import AlertPipeline
from spikewatch.config import Settings
from spikewatch.core.kernel import Kernel, Step
from spikewatch.core.model import GapRecord, Trade
from spikewatch.core.sequencer import Gap
from spikewatch.exchanges.base import Exchange
from spikewatch.hub import Event, Hub
from spikewatch.ingest.backfill import fetch_after, fetch_range, fetch_recent
from spikewatch.ingest.budget import (
    CATCH_UP_DEADLINE_S,
    GAP_DEADLINE_S,
    WARM_START_DEADLINE_S,
    Priority,
)
from spikewatch.ingest.pool import ConnectionPool
from spikewatch.ingest.rest import Dropped, RestClient, RestError
from spikewatch.store.base import Checkpoint, SignalStore, encode_checkpoint
from spikewatch.store.writer import StoreWriter

__all__ = ["WARM_BEFORE_CONNECT", "Recovery"]

# the engine's own log: these lines are the engine's, wherever the code sits
log = logging.getLogger("spikewatch.engine")
_encode = msgspec.json.Encoder().encode

#: Symbols warmed up (recent trades over REST) before connecting, at most; more are
#: warmed while they stream, busiest first by nature (their windows fill from the stream
#: before their look-up's turn comes, and it is skipped), quiet ones over REST
WARM_BEFORE_CONNECT = 50


class Recovery:
    """Checkpoints, warm start, catch-up, backfill and the watchdog of an engine."""

    # the engine's state these methods work on (set by Engine.__init__)
    settings: Settings
    store: SignalStore
    exchange: Exchange
    kernel: Kernel
    rest: RestClient
    hub: Hub
    _lock: threading.Lock
    _symbols: tuple[str, ...]
    _writer: StoreWriter | None
    _alerts: AlertPipeline | None
    _pool: ConnectionPool | None
    _restored: list[str]
    _checkpointed: set[str]
    _saved_upto: dict[str, tuple[int, int]]
    _delivered_upto: dict[tuple[str, str], int]
    _catch_up_later: set[str]
    _last_recv: dict[str, float]
    _interval: dict[str, float]
    _watchdog: dict[str, int]
    _recent_gaps: list[GapRecord]

    def _step(self, work: Callable[[], Step]) -> Step:
        """Run one kernel call under the lock and act on its result (the engine's)."""
        raise NotImplementedError

    def _spawn(self, work: Coroutine[object, object, None]) -> None:
        """Run ``work`` on the engine's loop (the engine's)."""
        raise NotImplementedError

    def _restore_checkpoints(self) -> list[str]:
        """Continue each symbol from its stored checkpoint (same detectors only). A symbol
        without one whose signals are stored (the last run was killed before its first
        checkpoint) continues from its last stored signal, one window before it: the
        trades since are fetched as a gap (or recorded), never skipped silently."""
        restored = []
        name = self.exchange.name
        checkpoints = self.store.checkpoints(name)
        for symbol, cp in checkpoints.items():
            if symbol not in self._symbols:
                continue
            if self.kernel.restore(name, symbol, cp.last_id, cp.detectors, cp.last_time_us):
                restored.append(symbol)
                if self.kernel.rules is not None:  # cooldowns go on: one event, one alert
                    self.kernel.rules.reopen(cp.alerts)
                log.info("%s continues from its checkpoint at trade %d", symbol, cp.last_id)
        stored: dict[str, int] = {}
        for (symbol, _), last_id in self._delivered_upto.items():
            stored[symbol] = max(last_id, stored.get(symbol, -1))
        window = self.kernel.warm_window
        for symbol in self._symbols:
            last_signal = stored.get(symbol)
            if symbol in checkpoints or last_signal is None or last_signal <= window:
                continue  # (a checkpoint of other parameters: those warm up afresh)
            self.kernel.resume(name, symbol, last_signal - window - 1)
            restored.append(symbol)
            log.info(
                "%s has no checkpoint (the last run stopped before its first one): it "
                "continues from its last stored signal, trade %d, fetching the %d trades "
                "before it and the trades since",
                symbol,
                last_signal,
                window,
            )
        return restored

    def _first_checkpoint_due(self) -> bool:
        """A symbol has seen trades but has no checkpoint yet: a crash now would leave the
        next run without one, so it is taken at once, not after checkpoint_interval."""
        if len(self._checkpointed) == len(self._symbols):
            return False
        name = self.exchange.name
        with self._lock:
            return any(
                (state := self.kernel.find(name, symbol)) is not None and state.last_id >= 0
                for symbol in self._symbols
                if symbol not in self._checkpointed
            )

    def save_checkpoints(self) -> None:
        """Queue a checkpoint of every symbol, written after the signals before it (and
        after the alerts before it are in the outbox: a crash then cannot restart past
        an alert that was never stored)."""
        if self._writer is None:
            return
        if self._alerts is not None:
            self._alerts.flush(2.0)
        name = self.exchange.name
        rules = self.kernel.rules
        with self._lock:
            points = []
            saved = self._saved_upto
            for symbol in self._symbols:
                current = self.kernel.find(name, symbol)
                if current is None or (current.last_id, current.trades) == saved.get(symbol):
                    continue  # nothing new since its last checkpoint: a quiet symbol is free
                state = self.kernel.checkpoint(name, symbol)
                if state is not None:
                    saved[symbol] = (current.last_id, current.trades)
                    self._checkpointed.add(symbol)
                    # encoded at once: one symbol's state as objects at a time
                    points.append(
                        encode_checkpoint(
                            Checkpoint(
                                exchange=name,
                                symbol=symbol,
                                last_id=state[0],
                                last_time_us=state[1],
                                detectors=state[2],
                                alerts=rules.open_alerts(name, symbol) if rules is not None else [],
                                saved_at=time.time(),
                            )
                        )
                    )
        if points:
            self._writer.put_job(lambda store: store.save_checkpoints(points))

    async def _warm_start(self, symbols: Sequence[str]) -> None:
        """Fill each fresh symbol's window from recent trades, so detection works from the
        first live trade; without REST the window fills from the stream instead. A symbol
        whose live trades have begun by its turn warms up from the stream (no look-up)."""
        need = self.settings.window
        name = self.exchange.name
        if not self.exchange.capabilities.recent_trades:
            log.info("%s has no recent-trades look-up: warming up from the stream", name)
            return
        late: list[str] = []
        for symbol in symbols:
            if symbol in self._restored or need == 0:
                continue
            state = self.kernel.find(name, symbol)
            if state is None or state.last_id >= 0:
                continue  # let go meanwhile, or streaming already
            # what the REST weight budget cannot send by then warms up from the stream
            deadline = self.rest.deadline_in(WARM_START_DEADLINE_S)
            try:
                trades = await fetch_recent(
                    self.rest, self.exchange, symbol, need, deadline=deadline
                )
            except Dropped:
                late.append(symbol)
                continue
            except RestError as exc:
                if exc.unreachable:  # no answer at all: the others would wait for none too
                    log.info(
                        "warm start skipped: %s cannot be reached (%s); the windows fill "
                        "from the stream",
                        self.rest.base_url,
                        exc,
                    )
                    return
                log.warning(
                    "warm start of %s skipped (%s); warming up from the stream", symbol, exc
                )
                continue
            except Exception as exc:  # REST broken: warm up from the stream instead
                log.warning(
                    "warm start of %s skipped (%s); warming up from the stream", symbol, exc
                )
                continue
            if state.last_id >= 0 or self.kernel.find(name, symbol) is not state:
                continue  # live trades came while it was fetched: they warm it up
            self._step(partial(self.kernel.warm, name, symbol, trades))
            say = log.info if len(symbols) <= WARM_BEFORE_CONNECT else log.debug
            say("%s warmed up from %d recent trades", symbol, len(trades))
        if late:
            log.warning(
                "warm start of %d symbols not fetched within %.0fs (REST weight budget); "
                "they warm up from the stream: %s",
                len(late),
                WARM_START_DEADLINE_S,
                " ".join(late[:20]) + (" ..." if len(late) > 20 else ""),
            )

    def _on_connect(self, symbols: Sequence[str], reconnect: bool) -> None:
        """After a lost connection, look for trades missed at its end on the symbols it
        carries: without this, a quiet symbol's gap would only show with its next trade."""
        if not reconnect:
            return
        name = self.exchange.name
        with self._lock:
            states = [(symbol, self.kernel.find(name, symbol)) for symbol in symbols]
        due = []
        for symbol, state in states:
            if state is None or state.sequencer.last_id < 0:
                continue
            if state.sequencer.gap is not None:  # after its backfill (see _backfill)
                self._catch_up_later.add(symbol)
            else:
                due.append(symbol)
        for symbol in due:
            self._spawn(self._catch_up(symbol))

    async def _catch_up(self, symbol: str) -> None:
        """Offer the trades after the last one seen, as if they had come live, page by
        page until they reach the live stream (which then carries on from them) or the
        present (a short page); a gap the live stream opens meanwhile is backfill's. At
        most ``max_backfill`` trades: any more show as a gap with the next live trade."""
        name = self.exchange.name
        state = self.kernel.state(name, symbol)
        page_size = self.exchange.capabilities.rest_page
        budget = max(self.kernel.max_backfill, page_size)
        if not self.exchange.capabilities.fetch_by_id:
            return
        deadline = self.rest.deadline_in(CATCH_UP_DEADLINE_S)
        while budget > 0:
            # on the loop's thread, as every kernel step: nothing moves between the
            # checks and the step below (no await in between)
            if state.sequencer.gap is not None:
                return  # live trades showed a gap: backfill fetches it
            try:
                trades = await fetch_after(
                    self.rest,
                    self.exchange,
                    symbol,
                    state.sequencer.last_id + 1,
                    deadline=deadline,
                )
            except Exception as exc:  # only an optimisation: the next live trade shows any gap
                log.info("catch-up of %s after a reconnect stopped: %s", symbol, exc)
                return
            if state.sequencer.gap is not None:
                return
            self._step(partial(self.kernel.catch_up, name, symbol, trades))
            budget -= len(trades)
            if len(trades) < page_size or state.sequencer.last_id > trades[-1].trade_id:
                return  # the present, or the live stream has gone on from these trades

    def _start_backfill(self, gap: Gap) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no event loop (frames fed by hand): nothing can be fetched
            self._step(
                partial(
                    self.kernel.give_up, gap.exchange, gap.symbol, "no REST access in this mode"
                )
            )
            return
        self._spawn(self._backfill(gap))

    async def _backfill(self, gap: Gap) -> None:
        """Fetch a gap over REST; the kernel releases the held live trades after it. If
        the symbol's connection came back meanwhile, catch up after it (trades missed at
        the end of that drop show no gap until a later live trade, maybe never)."""
        try:
            await self._fill(gap)
        finally:
            state = self.kernel.find(gap.exchange, gap.symbol)
            if (
                gap.symbol in self._catch_up_later
                and state is not None
                and state.sequencer.gap is None
            ):
                self._catch_up_later.discard(gap.symbol)
                self._spawn(self._catch_up(gap.symbol))

    async def _fill(self, gap: Gap) -> None:
        log.info(
            "fetching %d missed %s trades (%d..%d)",
            gap.size,
            gap.symbol,
            gap.first_id,
            gap.last_id,
        )

        def on_page(page: list[Trade]) -> bool:
            return self._step(partial(self.kernel.fill, gap.exchange, gap.symbol, page)).closed

        try:
            await fetch_range(
                self.rest,
                self.exchange,
                gap.symbol,
                gap.first_id,
                gap.last_id,
                on_page,
                # busy symbols first (their held live trades pile up fastest); what
                # cannot be sent in time is recorded as lost, with the reason
                priority=Priority.gap(self._interval.get(gap.symbol)),
                deadline=self.rest.deadline_in(GAP_DEADLINE_S),
            )
        except Exception as exc:  # whatever failed, the gap must not stay open unattended
            log.warning(
                "could not fill the %s gap %d..%d: %s", gap.symbol, gap.first_id, gap.last_id, exc
            )
            reason = str(exc) if isinstance(exc, RestError) else f"{type(exc).__name__}: {exc}"
            self._step(partial(self.kernel.give_up, gap.exchange, gap.symbol, reason))
            return
        still = self.kernel.state(gap.exchange, gap.symbol).sequencer.gap
        if still is not None and still.last_id == gap.last_id:
            # every page came, and some ids are in none: a venue's hole (skipped), or
            # trades its REST does not have (recorded)
            reason = "the exchange's trade look-ups do not hold these trades"
            self._step(partial(self.kernel.give_up, gap.exchange, gap.symbol, reason))

    def _store_gap(self, record: GapRecord) -> None:
        """Write a gap record (through the writer, in order) and push it to live clients."""
        log.warning(
            "gap in %s: %d trades (%d..%d) lost: %s",
            record.symbol,
            record.missing,
            record.first_id,
            record.last_id,
            record.reason,
        )
        self._recent_gaps = [record, *self._recent_gaps[:19]]
        if self._writer is not None:
            self._writer.put_job(lambda store: store.add_gap(record))
        else:
            self.store.add_gap(record)
        self.hub.publish(
            Event("gap", _encode(record), symbol=record.symbol, exchange=record.exchange)
        )

    def _check_silence(self) -> None:
        """Resubscribe when a symbol has been silent far longer than its usual interval
        (a fresh connection for the connection that carries it)."""
        pool = self._pool
        if pool is None:
            return
        now = time.monotonic()
        for symbol, last in list(self._last_recv.items()):
            if pool.state_of(symbol) != "connected":
                continue
            usual = self._interval.get(symbol, self.settings.watchdog_silence)
            limit = min(max(self.settings.watchdog_silence, 50 * usual), 3600.0)
            if now - last > limit:
                log.warning(
                    "%s silent for %.0fs (usually a trade every %.2fs): resubscribing",
                    symbol,
                    now - last,
                    usual,
                )
                self._watchdog[symbol] = self._watchdog.get(symbol, 0) + 1
                at = pool.connection_of(symbol)
                for other in self._last_recv:
                    if pool.connection_of(other) == at:
                        self._last_recv[other] = now
                pool.rotate(symbol)
                return
