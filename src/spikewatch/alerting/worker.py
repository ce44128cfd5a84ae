"""The delivery worker: one thread per destination, sending what the outbox holds.

Each destination's thread (its *lane*) loops: take the due deliveries, plan messages
within the rate cap (over it, one summary carries the rest), lease each message's rows,
send, and mark them sent right after the receiver's 2xx (committed at once) or failed
(retried with exponential backoff and jitter, a ``Retry-After`` honoured up to the cap,
dead-lettered after ``max_attempts``). A failure pauses the lane until its retry is due,
so a receiver that is down gets one probe per backoff step, not every alert at once; a
slow or dead destination never holds up another. Nothing runs on the ingest thread: the
engine hands alert events to :class:`OutboxSink` (on a sink worker's thread), which adds
them to the outbox and wakes the lanes.

State changes are logged once each (failing, delivering again, dead-lettered, a summary
sent); the failures in between only at DEBUG level.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import msgspec

from spikewatch.alerting.destinations import Destination, check_destinations
from spikewatch.alerting.messages import (
    RATE_WINDOW_S,
    SUMMARY_MAX,
    Message,
    plan,
    retry_delay,
    single,
    summary,
)
from spikewatch.alerting.outbox import Counts, Due
from spikewatch.alerting.port import OutboxPort
from spikewatch.alerting.senders import Sender, SendResult, build_sender
from spikewatch.core.alerts import Alert, AlertEvent
from spikewatch.core.model import iso_utc

log = logging.getLogger(__name__)

#: A lane with nothing due looks at the outbox again after this long (seconds), in case
#: another process added rows to the same file; new alerts from this process wake it.
IDLE_POLL_S = 5.0


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else iso_utc(int(seconds * 1_000_000))


class DestinationStats(msgspec.Struct, frozen=True):
    """Delivery counters of one destination (for ``/api/status`` and metrics).

    ``sent``, ``pending`` and ``dead`` count alerts in the outbox (all time, across
    restarts); ``messages``, ``summaries`` and ``failed_attempts`` count what this process
    did since it started (monotonic: Prometheus counters)."""

    name: str
    kind: str  # "apprise" or "webhook"
    sent: int  # alerts delivered
    pending: int  # alerts waiting (new, or retrying)
    dead: int  # alerts given up after max_attempts
    messages: int  # messages acknowledged by the receiver (a summary is one)
    summaries: int  # of which summaries (the rate cap was reached)
    failed_attempts: int  # sends that failed (each retried or dead-lettered)
    last_error: str | None  # the latest failure still on record
    last_sent_at: str | None  # ISO 8601 UTC of the latest delivery
    failing_since: str | None  # ISO 8601 UTC; None while the destination works


class DeliveryStats(msgspec.Struct, frozen=True):
    """The delivery worker's counters, one entry per destination, in config order."""

    running: bool
    destinations: list[DestinationStats]


class OutboxSink:
    """The sink (``spikewatch.sinks.Sink``) of alert events: adds them to the outbox, then
    wakes the delivery lanes. Run it in a ``SinkWorker`` with ``retry=True``, so a failing
    write (a full disk) is retried rather than dropping an alert."""

    def __init__(self, outbox: OutboxPort, worker: DeliveryWorker | None = None) -> None:
        self._outbox = outbox
        self._worker = worker

    def write(self, items: Sequence[AlertEvent]) -> None:
        """Store ``items`` (one transaction) and wake the lanes if an alert is new."""
        if self._outbox.add(items) and self._worker is not None:
            self._worker.notify()

    def close(self) -> None:
        """The outbox belongs to whoever opened it: nothing to release here."""


class _Lane:
    """One destination's thread and counters."""

    def __init__(
        self,
        worker: DeliveryWorker,
        destination: Destination,
        sender: Sender,
    ) -> None:
        self.worker = worker
        self.destination = destination
        self.sender = sender
        self.wake = threading.Event()
        self.messages = self.summaries = self.failed_attempts = 0
        self.failing_since: float | None = None
        self.spell_failures = 0
        self.last_error: str | None = None
        self.paused_until = 0.0
        self.errors_in_loop = 0
        #: messages the receiver acknowledged whose commit failed (the outbox failing):
        #: recorded before anything else is sent, so they are not sent again
        self.unrecorded: list[Message] = []
        counts = worker.outbox.counts(destination.name)
        self.last_error = counts.last_error
        self.stats = self._stats(counts)
        self.thread = threading.Thread(
            target=self._run, name=f"spikewatch-alerts-{destination.name}", daemon=True
        )

    # -- the loop -----------------------------------------------------------------------

    def _run(self) -> None:
        worker = self.worker
        while not worker.stopping:
            try:
                wake_at = self._round()
                if self.errors_in_loop:
                    log.info("alerts to %s: the outbox works again", self.destination.name)
                    self.errors_in_loop = 0
            except Exception as exc:  # the outbox failing (disk full, locked): retry later
                self.errors_in_loop += 1
                if self.errors_in_loop == 1:
                    log.warning(
                        "alerts to %s: the outbox failed (%s: %s); retrying",
                        self.destination.name,
                        type(exc).__name__,
                        exc,
                    )
                else:
                    log.debug("alerts to %s: the outbox failed again", self.destination.name)
                wake_at = worker.clock() + min(30.0, 0.5 * 2 ** min(self.errors_in_loop, 6))
            self._refresh()
            if worker.stopping:
                break
            delay = max(0.0, wake_at - worker.clock())
            if delay > 0:
                self.wake.wait(min(delay, IDLE_POLL_S))
                self.wake.clear()

    def _round(self) -> float:
        """Send what is due now; returns when to look again (wall-clock seconds)."""
        worker, dest = self.worker, self.destination
        self._record()
        now = worker.clock()
        if now < self.paused_until:
            return self.paused_until
        budget: int | None = None
        if dest.max_per_minute:
            used, oldest = worker.outbox.sent_since(dest.name, now - RATE_WINDOW_S)
            budget = dest.max_per_minute - used
            if budget <= 0:
                # the cap is used up: look again when the oldest message leaves the window
                next_due = worker.outbox.next_due_at(dest.name)
                free_at = (oldest if oldest is not None else now) + RATE_WINDOW_S
                return free_at if next_due is None else max(free_at, next_due)
        limit = SUMMARY_MAX + (budget if budget is not None else 0)
        due = worker.outbox.due(dest.name, now, limit)
        if not due:
            next_due = worker.outbox.next_due_at(dest.name)
            return now + IDLE_POLL_S if next_due is None else next_due
        alerts = self._readable(due)
        for message in plan(alerts, budget):
            if worker.stopping:
                break
            if not self._deliver(message):
                return self.paused_until
        return worker.clock()  # look again at once: more may be due

    def _readable(self, due: Sequence[Due]) -> list[Alert]:
        """The due alerts; those whose stored JSON no longer decodes are dead-lettered."""
        broken = [d.alert_id for d in due if d.alert is None]
        if broken:
            self.worker.outbox.mark_failed(
                self.destination.name,
                broken,
                "its stored alert cannot be read by this version",
                max_attempts=1,
                delay=lambda n: 0.0,
            )
            log.error(
                "alerts to %s: %d alert(s) dead-lettered: stored by another version, "
                "unreadable: %s",
                self.destination.name,
                len(broken),
                ", ".join(broken[:5]),
            )
        return [d.alert for d in due if d.alert is not None]

    def _deliver(self, message: Message) -> bool:
        """Lease, send and record one message; False when it failed (the lane pauses)."""
        worker, dest = self.worker, self.destination
        lease_s = worker.lease_s if worker.lease_s is not None else 2 * dest.timeout_s + 10
        taken = worker.outbox.lease(dest.name, message.alert_ids, worker.clock() + lease_s)
        if not taken:
            return True  # someone else has them
        if len(taken) < len(message.alerts):
            kept = [a for a in message.alerts if a.id in set(taken)]
            message = single(kept[0]) if len(kept) == 1 else summary(kept)
        try:
            result = self.sender.send(message)
        except Exception as exc:  # a bug in a sender must not stop the lane
            log.debug("alerts to %s: the sender raised", dest.name, exc_info=True)
            result = SendResult(False, f"{type(exc).__name__}: {exc}")
        if result.ok:
            # commit at once: the window in which a crash resends an acknowledged message
            # is this one statement (see docs/ALERTS.md, "Delivery")
            self.unrecorded.append(message)
            self._sent(message)
            self._record()
            return True
        self._failed(message, result)
        return False

    def _record(self) -> None:
        """Commit the acknowledged messages as sent; raises while the outbox fails (the
        loop retries with backoff, and sends nothing until they are recorded)."""
        while self.unrecorded:
            message = self.unrecorded[0]
            self.worker.outbox.mark_sent(self.destination.name, message.alert_ids, message.id)
            self.unrecorded.pop(0)

    def _sent(self, message: Message) -> None:
        dest = self.destination
        self.messages += 1
        if self.failing_since is not None:
            log.info(
                "alerts to %s: delivering again (after %d failed attempt(s))",
                dest.name,
                self.spell_failures,
            )
            self.failing_since = None
            self.spell_failures = 0
        self.last_error = None
        if message.kind == "summary":
            self.summaries += 1
            log.info(
                "alerts to %s: over the rate cap (%d/min); %d alerts sent as one summary",
                dest.name,
                dest.max_per_minute,
                len(message.alerts),
            )

    def _failed(self, message: Message, result: SendResult) -> None:
        worker, dest = self.worker, self.destination
        error = (result.error or "failed")[:500]
        self.failed_attempts += 1
        self.spell_failures += 1
        self.last_error = error
        wait = result.retry_after

        def delay(attempt: int) -> float:
            backoff = retry_delay(attempt, dest.backoff_first_s, dest.backoff_cap_s, worker.rand)
            return backoff if wait is None else min(max(wait, backoff), dest.backoff_cap_s)

        failed = worker.outbox.mark_failed(
            dest.name,
            message.alert_ids,
            error,
            max_attempts=dest.max_attempts,
            delay=delay,
        )
        now = worker.clock()
        self.paused_until = failed.retry_at if failed.retry_at is not None else now
        if self.failing_since is None:
            self.failing_since = now
            log.warning(
                "alerts to %s: delivery failing (%s); retrying with backoff",
                dest.name,
                error,
            )
        else:
            log.debug("alerts to %s: failed again (%s)", dest.name, error)
        if failed.dead:
            log.error(
                "alerts to %s: %d alert(s) dead-lettered after %d attempts (last error: %s): %s",
                dest.name,
                len(failed.dead),
                dest.max_attempts,
                error,
                ", ".join(failed.dead[:5]) + (" ..." if len(failed.dead) > 5 else ""),
            )

    # -- counters -----------------------------------------------------------------------

    def _refresh(self) -> None:
        try:
            counts = self.worker.outbox.counts(self.destination.name)
        except Exception:  # the outbox failing: keep the last counts
            return
        self.stats = self._stats(counts)
        self.worker.changed()

    def _stats(self, counts: Counts) -> DestinationStats:
        return DestinationStats(
            name=self.destination.name,
            kind=self.destination.kind,
            sent=counts.sent,
            pending=counts.pending,
            dead=counts.dead,
            messages=self.messages,
            summaries=self.summaries,
            failed_attempts=self.failed_attempts,
            last_error=self.last_error,
            last_sent_at=_iso(counts.last_sent_at),
            failing_since=_iso(self.failing_since),
        )


class DeliveryWorker:
    """Delivers the outbox's pending alerts to ``destinations``, one thread each.

    ``senders`` replaces the sender built for a destination (by name), ``clock`` is the
    wall clock (seconds), ``rand`` the jitter's source, ``lease_s`` how long a send holds
    its rows against other processes (default: twice the timeout plus 10 s)."""

    def __init__(
        self,
        outbox: OutboxPort,
        destinations: Sequence[Destination],
        *,
        senders: Mapping[str, Sender] | None = None,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        lease_s: float | None = None,
    ) -> None:
        check_destinations(destinations)
        missing = [d.name for d in destinations if d.name not in outbox.destinations]
        if missing:
            raise ValueError(f"the outbox does not deliver to {', '.join(missing)}")
        self.outbox = outbox
        self.clock = clock
        self.rand = rand
        self.lease_s = lease_s
        self.stopping = False
        self._started = False
        self._cond = threading.Condition()
        given = dict(senders or {})
        self._lanes = [_Lane(self, d, given.get(d.name) or build_sender(d)) for d in destinations]

    def start(self) -> None:
        """Start the lanes' threads (once)."""
        if self._started:
            raise RuntimeError("the delivery worker was started already")
        self._started = True
        for lane in self._lanes:
            lane.thread.start()

    def notify(self) -> None:
        """New alerts are in the outbox: look now (any thread)."""
        for lane in self._lanes:
            lane.wake.set()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the lanes after the sends under way (each ends within its timeout); what
        is pending stays in the outbox for the next process."""
        self.stopping = True
        self.notify()
        deadline = time.monotonic() + timeout
        for lane in self._lanes:
            if lane.thread.is_alive():
                lane.thread.join(max(0.0, deadline - time.monotonic()))
                if lane.thread.is_alive():
                    log.warning("alerts to %s: still sending at shutdown", lane.destination.name)
            lane.sender.close()
            if lane.unrecorded and not lane.thread.is_alive():
                try:
                    lane._record()
                except Exception as exc:
                    log.warning(
                        "alerts to %s: %d delivered message(s) could not be recorded (%s); "
                        "the next start sends them again, with the same idempotency ids",
                        lane.destination.name,
                        len(lane.unrecorded),
                        exc,
                    )
        with self._cond:
            self._cond.notify_all()

    def changed(self) -> None:
        """A lane refreshed its counters (wakes :meth:`wait_idle`)."""
        with self._cond:
            self._cond.notify_all()

    def stats(self) -> DeliveryStats:
        """The counters now: immutable, cheap (no database read), from any thread."""
        return DeliveryStats(
            running=self._started and not self.stopping,
            destinations=[lane.stats for lane in self._lanes],
        )

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no delivery is pending in the outbox (all sent or dead); False on
        timeout. For the end of a replay with alerts, and tests."""
        deadline = None if timeout is None else time.monotonic() + timeout
        names = [lane.destination.name for lane in self._lanes]
        with self._cond:
            while True:
                if all(self.outbox.counts(name).pending == 0 for name in names):
                    return True
                left = math.inf if deadline is None else deadline - time.monotonic()
                if left <= 0 or self.stopping:
                    return False
                # woken by each lane's round; the bound covers rows another process adds
                self._cond.wait(min(left, IDLE_POLL_S))

    def sink(self) -> OutboxSink:
        """The sink that feeds this worker's outbox (see :class:`OutboxSink`)."""
        return OutboxSink(self.outbox, self)
