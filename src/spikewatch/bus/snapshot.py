"""Kernel snapshots per partition in a JetStream key-value bucket.

A detect worker saves, every so often, the checkpoint of every symbol of a partition (the
kernel's :meth:`~spikewatch.core.kernel.Kernel.checkpoint`: last trade id and time,
detector states, open alerts) with the stream sequence of the last message it had
handled then. A worker that takes the partition over loads it, restores the kernel, and
starts the partition's consumer at ``stream_seq + 1``.

The kernel has no checkpoint-to-bytes of its own; :func:`kernel_snapshot` and
:func:`restore_kernel` build one here on its public API, as the same
:class:`~spikewatch.store.base.Checkpoint` records the SQLite store keeps, in JSON
(detector snapshots are JSON-safe, and exact: integers stay integers), compressed.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Iterable
from typing import Final

import msgspec
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

from spikewatch.bus.subjects import check_token
from spikewatch.core.kernel import Kernel
from spikewatch.store.base import Checkpoint

_MAGIC: Final = b"SWS"
_VERSION: Final = 1
#: magic, version, partition, stream sequence, CRC-32 of the data
_HEAD: Final = struct.Struct("<3sBIQI")
_checkpoints = msgspec.json.Decoder(list[Checkpoint])


class MalformedSnapshot(ValueError):
    """A stored snapshot that is not one (damaged, or of an unknown version)."""


class PartitionSnapshot(msgspec.Struct, frozen=True):
    """A partition's kernel state and the stream sequence it includes everything up to."""

    partition: int
    stream_seq: int
    data: bytes
    revision: int = 0  # the key-value revision it was read at (0: not stored yet)


async def ensure_snapshot_bucket(js: JetStreamContext, bucket: str, replicas: int = 1) -> KeyValue:
    """The snapshot bucket ``bucket``, made if missing (no TTL: a snapshot lasts until
    replaced; one revision kept per partition)."""
    check_token("bucket name", bucket)
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        return await js.create_key_value(
            KeyValueConfig(
                bucket=bucket,
                description="spikewatch kernel snapshots, one per partition",
                history=1,
                storage=StorageType.FILE,
                replicas=replicas,
            )
        )


class SnapshotStore:
    """Save and load partitions' snapshots in ``kv`` (key ``p<partition>``)."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def save(self, partition: int, stream_seq: int, data: bytes) -> int:
        """Store ``data`` as partition ``partition``'s state up to ``stream_seq``;
        returns the revision. The value must fit one NATS message (1 MiB by default)."""
        head = _HEAD.pack(_MAGIC, _VERSION, partition, stream_seq, zlib.crc32(data))
        return await self._kv.put(f"p{partition}", head + data)

    async def load(self, partition: int) -> PartitionSnapshot | None:
        """The stored snapshot of ``partition`` (None if there is none);
        MalformedSnapshot if what is stored is not one."""
        try:
            entry = await self._kv.get(f"p{partition}")
        except KeyNotFoundError:
            return None
        value = entry.value or b""
        if len(value) < _HEAD.size:
            raise MalformedSnapshot(f"partition {partition}: {len(value)} bytes")
        magic, version, stored_partition, seq, crc = _HEAD.unpack_from(value)
        data = value[_HEAD.size :]
        if magic != _MAGIC or version != _VERSION:
            raise MalformedSnapshot(f"partition {partition}: not a snapshot of version 1")
        if stored_partition != partition or zlib.crc32(data) != crc:
            raise MalformedSnapshot(f"partition {partition}: damaged (partition or CRC)")
        return PartitionSnapshot(partition, seq, data, entry.revision or 0)


def kernel_snapshot(kernel: Kernel, keys: Iterable[tuple[str, str]] | None = None) -> bytes:
    """The checkpoints of ``keys`` (default: every symbol the kernel has seen trades of)
    as bytes for :meth:`SnapshotStore.save`."""
    if keys is None:
        keys = [(s.exchange, s.symbol) for s in kernel.states()]
    rules = kernel.rules
    points = []
    for exchange, symbol in keys:
        state = kernel.checkpoint(exchange, symbol)
        if state is None:
            continue
        points.append(
            Checkpoint(
                exchange=exchange,
                symbol=symbol,
                last_id=state[0],
                last_time_us=state[1],
                detectors=state[2],
                alerts=rules.open_alerts(exchange, symbol) if rules is not None else [],
                saved_at=time.time(),
            )
        )
    return zlib.compress(msgspec.json.encode(points), 6)


def restore_kernel(kernel: Kernel, data: bytes) -> list[tuple[str, str]]:
    """Continue ``kernel`` from :func:`kernel_snapshot` bytes; the keys restored (a key
    whose detectors or parameters changed since is left to warm up afresh)."""
    try:
        points = _checkpoints.decode(zlib.decompress(data))
    except (zlib.error, msgspec.DecodeError) as exc:
        raise MalformedSnapshot(f"not a kernel snapshot: {exc}") from None
    restored = []
    for cp in points:
        if kernel.restore(cp.exchange, cp.symbol, cp.last_id, cp.detectors, cp.last_time_us):
            if kernel.rules is not None:
                kernel.rules.reopen(cp.alerts)
            restored.append((cp.exchange, cp.symbol))
    return restored
