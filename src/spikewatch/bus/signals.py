"""Signals out: ``signals.<exchange>.<symbol>``, one message per signal, its JSON.

A detect worker publishes each step's signals here; ``spikewatch serve`` pushes them to
live clients, and whatever writes them to PostgreSQL reads them from here too. Each
message's ``Nats-Msg-Id`` is the signal's id, which is deterministic (exchange, symbol,
detector, trade id): a signal found again (a redelivered batch, a worker that took a
partition over from an older snapshot) is dropped by JetStream within the duplicate
window, and by the store's idempotent insert after it. At-least-once delivery with these
two gives exactly-once effects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Final

import msgspec
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamInfo
from nats.js.errors import NotFoundError

from spikewatch.bus.subjects import check_token, signal_subject
from spikewatch.core.model import Signal

#: Signals are few (tens an hour a symbol) and small: a week of them costs little.
SIGNAL_MAX_AGE_S: Final = 7 * 24 * 3600.0
SIGNAL_DUPLICATE_WINDOW_S: Final = 600.0

_encoder = msgspec.json.Encoder()


async def ensure_signal_stream(
    js: JetStreamContext,
    name: str,
    *,
    prefix: str = "signals",
    max_age: float = SIGNAL_MAX_AGE_S,
    max_bytes: int = 1 << 30,
    duplicate_window: float = SIGNAL_DUPLICATE_WINDOW_S,
    replicas: int = 1,
) -> StreamInfo:
    """Create the signal stream ``name`` on ``<prefix>.*.*`` if missing (idempotent;
    other limits on an existing stream are updated)."""
    check_token("stream name", name)
    config = StreamConfig(
        name=name,
        description="spikewatch signals: <prefix>.<exchange>.<symbol>, one JSON each",
        subjects=[f"{check_token('subject prefix', prefix)}.*.*"],
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_age=max_age,
        max_bytes=max_bytes,
        duplicate_window=duplicate_window,
        storage=StorageType.FILE,
        num_replicas=replicas,
    )
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        return await js.add_stream(config)
    have = info.config
    if (have.max_age, have.max_bytes, have.duplicate_window) != (
        max_age,
        max_bytes,
        duplicate_window,
    ) or have.subjects != config.subjects:
        return await js.update_stream(config)
    return info


class SignalPublisher:
    """Publishes signals, each acknowledged by JetStream, in order per call."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        prefix: str = "signals",
        stream: str | None = None,
        ack_timeout: float = 5.0,
    ) -> None:
        self._js = js
        self.prefix = check_token("subject prefix", prefix)
        self.stream = stream
        self.ack_timeout = ack_timeout
        self.published = 0
        self.duplicates = 0

    async def publish(self, signals: Sequence[Signal]) -> None:
        """Publish ``signals`` and wait until JetStream has stored every one (a repeat is
        counted in :attr:`duplicates`). Raises what the publish raised; a retry is safe."""
        if not signals:
            return
        pending = [
            self._js.publish(
                signal_subject(s.exchange, s.symbol, self.prefix),
                _encoder.encode(s),
                timeout=self.ack_timeout,
                stream=self.stream,
                headers={"Nats-Msg-Id": s.id},
            )
            for s in signals
        ]
        acks = await asyncio.gather(*pending)  # (requests leave in order on one connection)
        self.published += len(acks)
        self.duplicates += sum(1 for ack in acks if ack.duplicate)
