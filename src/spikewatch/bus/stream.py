"""The trade stream's configuration: created once, checked on every start.

The number of partitions is fixed for a stream's life: the publisher's subjects and every
detect worker's consumers depend on it, so a process started with another number would
silently read nothing, or half. It is recorded in the stream's config and a mismatch is a
:class:`PartitionMismatch` at start-up. It is kept in the description (every server
version keeps that) and in the metadata (nats-server 2.10 and later; 2.9 drops the field).
"""

from __future__ import annotations

import re
from typing import Final

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamInfo
from nats.js.errors import NotFoundError

from spikewatch.bus.codec import read_header
from spikewatch.bus.subjects import TradeSubjects, check_token

#: the metadata key (nats-server >= 2.10) that records the partition count
PARTITIONS_KEY: Final = "spikewatch.partitions"
_DESCRIPTION: Final = re.compile(r"spikewatch trades, (\d+) partitions")

#: Default retention: long enough for a worker that takes over a partition to replay from
#: a snapshot a few minutes old and for a new worker to warm its windows, bounded so the
#: stream never fills the disk (the oldest trades go first).
MAX_AGE_S: Final = 6 * 3600.0
MAX_BYTES: Final = 8 << 30
#: How long JetStream remembers message ids: a batch published again within it (a retried
#: publish, an ingest restart re-sending its last batches) is stored once.
DUPLICATE_WINDOW_S: Final = 120.0


class PartitionMismatch(ValueError):
    """The stream was made with another partition count (or other subjects)."""


def _config(
    name: str,
    subjects: TradeSubjects,
    max_age: float,
    max_bytes: int,
    duplicate_window: float,
    storage: StorageType,
    replicas: int,
) -> StreamConfig:
    return StreamConfig(
        name=name,
        description=(
            f"spikewatch trades, {subjects.partitions} partitions: "
            f"{subjects.prefix}.<partition>.<exchange>.<symbol>"
        ),
        subjects=[subjects.wildcard],
        retention=RetentionPolicy.LIMITS,  # kept for replay, whoever has read it
        discard=DiscardPolicy.OLD,
        max_age=max_age,
        max_bytes=max_bytes,
        duplicate_window=duplicate_window,
        storage=storage,
        num_replicas=replicas,
        metadata={PARTITIONS_KEY: str(subjects.partitions)},
    )


def recorded_partitions(config: StreamConfig) -> int | None:
    """The partition count a stream's config records (None: not a spikewatch stream)."""
    if config.metadata and PARTITIONS_KEY in config.metadata:
        return int(config.metadata[PARTITIONS_KEY])
    found = _DESCRIPTION.match(config.description or "")
    return int(found.group(1)) if found else None


async def ensure_trade_stream(
    js: JetStreamContext,
    name: str,
    subjects: TradeSubjects,
    *,
    max_age: float = MAX_AGE_S,
    max_bytes: int = MAX_BYTES,
    duplicate_window: float = DUPLICATE_WINDOW_S,
    storage: StorageType = StorageType.FILE,
    replicas: int = 1,
) -> StreamInfo:
    """Create the trade stream ``name``, or check the existing one: idempotent.

    An existing stream with another partition count or subjects raises
    :class:`PartitionMismatch` (nothing is changed); one with other limits (``max_age``
    in seconds, ``max_bytes``, ``duplicate_window`` in seconds) is updated to these.
    """
    check_token("stream name", name)
    if max_age:  # (JetStream refuses a duplicate window longer than the retention)
        duplicate_window = min(duplicate_window, max_age)
    wanted = _config(name, subjects, max_age, max_bytes, duplicate_window, storage, replicas)
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        return await js.add_stream(wanted)
    have = info.config
    recorded = recorded_partitions(have)
    if recorded != subjects.partitions or have.subjects != wanted.subjects:
        raise PartitionMismatch(
            f"stream {name} has {recorded} partitions on {have.subjects}; this process "
            f"expects {subjects.partitions} on {wanted.subjects} (a stream's partition "
            "count cannot change: make a new stream)"
        )
    if (have.max_age, have.max_bytes, have.duplicate_window) != (
        max_age,
        max_bytes,
        duplicate_window,
    ):
        wanted.storage = have.storage  # (JetStream cannot change these in place)
        wanted.num_replicas = have.num_replicas
        return await js.update_stream(wanted)
    return info


async def stream_partitions(js: JetStreamContext, name: str) -> int:
    """The partition count recorded in stream ``name``; PartitionMismatch if it records
    none (a stream spikewatch did not make)."""
    info = await js.stream_info(name)
    recorded = recorded_partitions(info.config)
    if recorded is None:
        raise PartitionMismatch(f"stream {name} records no partition count")
    return recorded


async def last_published_id(
    js: JetStreamContext, name: str, subjects: TradeSubjects, exchange: str, symbol: str
) -> int | None:
    """The last trade id of ``(exchange, symbol)`` stored in stream ``name`` (None: none
    kept): where a restarted ingest goes on from (the trades after it are fetched, the
    last batches sent again are dropped as duplicates or as repeats by the kernel). A
    last message that is not a batch raises MalformedBatch."""
    try:
        msg = await js.get_last_msg(name, subjects.subject(exchange, symbol))
    except NotFoundError:
        return None
    return read_header(msg.data or b"").last_id
