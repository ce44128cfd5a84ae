"""Which worker detects on which partition: leases in a JetStream key-value bucket.

A lease is the key ``p<partition>`` of the bucket, its value the holder's id. Taking it
is a create-if-absent (``kv.create``); keeping it is a compare-and-set on the revision the
holder last wrote (``kv.update(last=revision)``), every ``renew_every`` seconds. The bucket's
``max_age`` is the lease's TTL: a holder that stops renewing (dead, partitioned, paused)
has its key expire after at most ``ttl`` seconds, and another worker's next
:meth:`PartitionLease.acquire` succeeds. (A per-key TTL needs nats-server 2.11; the
bucket-wide age works on 2.9 and is what a lease bucket wants anyway.)

A lease is not a fence: a holder that was paused past its TTL may process a few messages
after another worker took over before its next renewal fails. That costs nothing but
work: processing is at-least-once already, and signal ids and store inserts are
idempotent. A holder that loses its lease (:class:`LeaseLost`) must stop its consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from spikewatch.bus.subjects import check_token

#: Seconds a lease lasts without renewal: a dead worker's partitions move within it (and
#: the next round of a live worker, 1 s): within 10 s of its death, as issue 13 asks.
LEASE_TTL_S = 6.0


class LeaseLost(RuntimeError):
    """Another worker holds the partition now (or the lease could not be renewed in time)."""


async def ensure_lease_bucket(
    js: JetStreamContext, bucket: str, ttl: float = LEASE_TTL_S, replicas: int = 1
) -> KeyValue:
    """The lease bucket ``bucket`` with a TTL of ``ttl`` seconds, made if missing."""
    check_token("bucket name", bucket)
    try:
        kv = await js.key_value(bucket)
    except BucketNotFoundError:
        return await js.create_key_value(
            KeyValueConfig(
                bucket=bucket,
                description="spikewatch partition leases",
                history=1,
                ttl=ttl,
                storage=StorageType.FILE,
                replicas=replicas,
            )
        )
    have = (await kv.status()).ttl
    if have != ttl:
        raise ValueError(f"lease bucket {bucket} has a TTL of {have} s, not {ttl} s")
    return kv


class PartitionLease:
    """The lease of one partition for one worker (``owner``, unique per process)."""

    def __init__(
        self,
        kv: KeyValue,
        partition: int,
        owner: str,
        *,
        ttl: float = LEASE_TTL_S,
        renew_every: float | None = None,
    ) -> None:
        self._kv = kv
        self.partition = partition
        self.key = f"p{partition}"
        self.owner = owner
        self.ttl = ttl
        #: seconds between renewals: a third of the TTL, so two may fail before it lapses
        self.renew_every = renew_every if renew_every is not None else ttl / 3
        #: the revision this holder last wrote (None: not held)
        self.revision: int | None = None
        self._renewed = 0.0  # monotonic time of the last successful write
        #: successful renewals (for the detect role's metrics)
        self.renewals = 0

    @property
    def held(self) -> bool:
        """Whether this holder believes it holds the lease (it renewed within the TTL)."""
        return self.revision is not None and time.monotonic() - self._renewed < self.ttl

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it (or this owner already does); False if
        another worker holds it."""
        value = self.owner.encode()
        try:
            revision = await self._kv.create(self.key, value)
        except KeyWrongLastSequenceError:
            try:
                entry = await self._kv.get(self.key)
            except KeyNotFoundError:  # expired or released between the two calls
                return False
            if entry.value != value or entry.revision is None:
                return False
            try:  # ours from before (a restart within the TTL): take it on
                revision = await self._kv.update(self.key, value, last=entry.revision)
            except KeyWrongLastSequenceError:
                return False
        self.revision = revision
        self._renewed = time.monotonic()
        return True

    async def renew(self) -> None:
        """Extend the lease; LeaseLost if another worker took it meanwhile."""
        if self.revision is None:
            raise LeaseLost(f"partition {self.partition}: not held")
        try:
            self.revision = await self._kv.update(self.key, self.owner.encode(), last=self.revision)
        except KeyWrongLastSequenceError:
            self.revision = None
            raise LeaseLost(f"partition {self.partition}: taken by another worker") from None
        self._renewed = time.monotonic()
        self.renewals += 1

    async def release(self) -> None:
        """Give the lease up (a clean stop): another worker may take it at once."""
        revision, self.revision = self.revision, None
        if revision is not None:
            with contextlib.suppress(KeyWrongLastSequenceError):  # (already lost)
                await self._kv.delete(self.key, last=revision)

    async def keep(self, stop: asyncio.Event) -> None:
        """Renew every ``renew_every`` seconds until ``stop`` is set, then release.
        Raises LeaseLost when the lease was taken, or when no renewal succeeded for a
        whole TTL (the server unreachable: another worker may have it by now)."""
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.renew_every)
                    break
                try:
                    await self.renew()
                except LeaseLost:
                    raise
                except Exception:  # a timeout, a reconnect: try again until the TTL
                    if not self.held:
                        self.revision = None
                        raise LeaseLost(
                            f"partition {self.partition}: not renewed for {self.ttl} s"
                        ) from None
        finally:
            if stop.is_set():
                await self.release()
