"""The detect side: one durable pull consumer per partition, trades handed over in order.

:class:`PartitionConsumer` fetches up to ``batch`` messages at a time from the consumer of
one partition (filter subject ``<prefix>.<partition>.*.*``), decodes each into a
:class:`~spikewatch.core.model.TradeBatch` and hands them to a callback, which feeds the
kernel. Only when the callback has returned is the last message acknowledged (the
consumer's ack policy is ``all``: one ack covers the fetch), so a worker that dies
mid-way has its messages delivered again: at least once. The kernel drops trades it has
already seen (by trade id), and signal ids are deterministic, so a repeat changes nothing
downstream.

:attr:`PartitionConsumer.last_seq` is the stream sequence of the last message handled: a
snapshot of the kernel taken between two fetches corresponds to it, and a worker that
takes the partition over starts its consumer at ``last_seq + 1`` of that snapshot
(``start_seq``), so nothing is skipped and nothing before it is replayed twice.

A message that is not a trade batch is counted by kind (:attr:`malformed`) and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import NotFoundError

from spikewatch.bus.codec import MalformedBatch, decode_batch
from spikewatch.bus.subjects import TradeSubjects, check_token
from spikewatch.core.model import TradeBatch

log = logging.getLogger(__name__)

Handler = Callable[[Sequence[TradeBatch], int], Awaitable[None] | None]
"""Called with the decoded batches of one fetch, in stream order, and the stream sequence
of the last message among them; may be a coroutine function."""

#: Messages a fetch asks for at most: at ~500 trades a message, tens of thousands of trades.
FETCH_BATCH = 64


class PartitionConsumer:
    """Reads partition ``partition`` of stream ``stream`` (see the module docstring).

    The partition has one consumer, whichever worker holds its lease: the stream's
    consumer filtered on the partition (see :meth:`open`). ``durable`` names it when it is
    made (default ``detect-<partition>``). ``start_seq`` makes it anew at that stream
    sequence (failover from a snapshot); without it an existing consumer goes on from its
    acknowledged position and a new one starts at ``start_time`` (an aware datetime: warm
    the windows on the last minutes only) or else per ``deliver`` (default: the oldest
    trade the stream keeps).
    """

    def __init__(
        self,
        js: JetStreamContext,
        stream: str,
        subjects: TradeSubjects,
        partition: int,
        *,
        durable: str | None = None,
        start_seq: int | None = None,
        start_time: datetime | None = None,
        deliver: DeliverPolicy = DeliverPolicy.ALL,
        batch: int = FETCH_BATCH,
        max_wait: float = 0.5,
        ack_wait: float = 30.0,
    ) -> None:
        self._js = js
        self.stream = stream
        self.subjects = subjects
        self.partition = partition
        self.filter = subjects.filter(partition)
        self.durable = check_token("consumer name", durable or f"detect-{partition}")
        #: the consumer's name on the server (set by :meth:`open`)
        self.name = self.durable
        self.start_seq = start_seq
        self.start_time = start_time
        self.deliver = deliver
        self.batch = batch
        self.max_wait = max_wait
        self.ack_wait = ack_wait
        self._sub: JetStreamContext.PullSubscription | None = None
        self._failed = False
        #: stream sequence of the last message handled (0: none yet)
        self.last_seq = 0
        self.messages = 0
        self.trades = 0
        self.redelivered = 0
        #: malformed messages skipped, by kind
        self.malformed: dict[str, int] = {}

    async def open(self) -> None:
        """Bind to the partition's consumer, or make it.

        The partition's consumer is the stream's consumer whose filter is the
        partition's. Without ``start_seq`` an existing one is bound to (it goes on from
        its acknowledged position); with it, every consumer of the partition is deleted
        and a new one made at ``start_seq``, under a name of its own (``<durable>-<hex>``):
        an acknowledgement from the previous holder (still running, its lease lost, or
        on its way when it died) names the old consumer; on a consumer of the same name,
        under ack policy "all", it would move the new one's floor past messages the new
        holder has not handled. On a deleted consumer it is refused.
        """
        js = self._js
        mine: list[ConsumerInfo] = []
        while True:  # (the server lists 256 at a time)
            page = await js.consumers_info(self.stream, offset=len(mine) if mine else None)
            mine.extend(page)
            if len(page) < 256:
                break
        mine = [c for c in mine if c.config.filter_subject == self.filter]
        if self.start_seq is None and mine:
            named = [c for c in mine if c.name == self.durable]
            self.name = (named or mine)[0].name
        else:
            for old in mine:
                with contextlib.suppress(NotFoundError):
                    await js.delete_consumer(self.stream, old.name)
            self.name = self.durable
            if self.start_seq is not None:
                self.name = f"{self.durable}-{secrets.token_hex(4)}"
            config = ConsumerConfig(
                durable_name=self.name,
                name=self.name,
                description=f"spikewatch detect, partition {self.partition}",
                filter_subject=self.filter,
                ack_policy=AckPolicy.ALL,
                ack_wait=self.ack_wait,
                max_ack_pending=-1,  # (with ack-all, one ack frees a whole fetch)
            )
            if self.start_seq is not None:
                config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
                config.opt_start_seq = self.start_seq
            elif self.start_time is not None:
                config.deliver_policy = DeliverPolicy.BY_START_TIME
                config.opt_start_time = self.start_time
            else:
                config.deliver_policy = self.deliver
            await js.add_consumer(self.stream, config=config)
        self._sub = await js.pull_subscribe_bind(durable=self.name, stream=self.stream)

    async def poll(self, handler: Handler) -> int:
        """One fetch: decode, call ``handler``, acknowledge. Returns the messages handled
        (0 when none came within ``max_wait`` seconds).

        An exception from ``handler`` propagates, nothing of the fetch is acknowledged,
        and this consumer refuses to poll again (RuntimeError): under ack policy "all"
        the next fetch's ack would cover the failed one too. The worker recovers as a
        new holder would: a new consumer from its last snapshot's sequence.
        """
        if self._failed:
            raise RuntimeError(
                f"partition {self.partition}: a handler failed after stream seq "
                f"{self.last_seq}; start a new consumer from a snapshot"
            )
        if self._sub is None:
            await self.open()
        assert self._sub is not None
        try:
            msgs = await self._sub.fetch(self.batch, timeout=self.max_wait)
        except (nats.errors.TimeoutError, TimeoutError):  # (nats-py raises either)
            return 0
        if not msgs:
            return 0
        batches = self.decode(msgs)
        last = msgs[-1]
        seq = last.metadata.sequence.stream
        if batches:
            self._failed = True  # until the handler has returned
            result = handler(batches, seq)
            if inspect.isawaitable(result):
                await result
            self._failed = False
        await last.ack()  # ack policy "all": the whole fetch (a lost ack means a redelivery)
        self.last_seq = seq
        self.messages += len(msgs)
        return len(msgs)

    async def lag(self) -> int:
        """Messages of the partition the server has not delivered to this consumer yet
        (its ``num_pending``): how far the worker is behind."""
        if self._sub is None:
            await self.open()
        info = await self._js.consumer_info(self.stream, self.name)
        return info.num_pending or 0

    async def run(self, handler: Handler, stop: asyncio.Event) -> None:
        """:meth:`poll` until ``stop`` is set (checked between fetches, so at most
        ``max_wait`` seconds after it)."""
        while not stop.is_set():
            await self.poll(handler)

    def decode(self, msgs: Sequence[Msg]) -> list[TradeBatch]:
        """The batches of ``msgs``; malformed ones counted (and logged once per kind)."""
        batches = []
        for msg in msgs:
            if msg.metadata.num_delivered > 1:
                self.redelivered += 1
            try:
                batch = decode_batch(msg.data)
            except MalformedBatch as exc:
                seen = self.malformed.get(exc.kind, 0)
                self.malformed[exc.kind] = seen + 1
                if not seen:
                    log.warning(
                        "%s seq %d: not a trade batch (%s): skipped; further ones of this "
                        "kind are only counted",
                        msg.subject,
                        msg.metadata.sequence.stream,
                        exc,
                    )
                continue
            self.trades += len(batch.trade_ids)
            batches.append(batch)
        return batches

    async def close(self, *, delete: bool = False) -> None:
        """Stop fetching; ``delete`` also removes the durable consumer (a partition given
        up for good, or a test)."""
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        if delete:
            with contextlib.suppress(NotFoundError):
                await self._js.delete_consumer(self.stream, self.name)
