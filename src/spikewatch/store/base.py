"""The store port: what the engine and the web layer need of any signal store."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import msgspec

from spikewatch.core.model import GapRecord, Signal

__all__ = [
    "Checkpoint",
    "Cursor",
    "EncodedCheckpoint",
    "GapRecord",
    "SignalPage",
    "SignalStore",
    "checkpoint_rows",
    "encode_checkpoint",
]


#: Retention marks (wall-clock seconds, the highest delivery number then) are recorded
#: at most this often: signals carry no time of storing, so a signal's age is that of
#: the first mark at or above its number (``prune`` in both stores).
MARK_EVERY_S = 60.0


class Cursor(msgspec.Struct, frozen=True, array_like=True):
    """Position after the last signal of a page (signals come newest first)."""

    time_us: int
    id: str

    def encode(self) -> str:
        """An opaque URL-safe token."""
        return base64.urlsafe_b64encode(msgspec.json.encode(self)).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        """Parse a token from :meth:`encode`; ValueError if it is not one."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            cursor = msgspec.json.decode(raw, type=cls)
        except (binascii.Error, ValueError, msgspec.DecodeError):
            raise ValueError("cursor is not one this server issued") from None
        if not 0 <= cursor.time_us < 2**63 or len(cursor.id) > 400:
            raise ValueError("cursor is not one this server issued")
        return cursor


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """Where one symbol's detection stood: its last trade id and detector states."""

    exchange: str
    symbol: str
    last_id: int
    detectors: list[dict[str, Any]]
    saved_at: float  # wall-clock seconds
    #: exchange time of the last trade (µs); None in checkpoints of older versions
    last_time_us: int | None = None
    #: the symbol's open alerts (their cooldowns go on after a restart)
    alerts: list[dict[str, Any]] = []


class EncodedCheckpoint(NamedTuple):
    """A :class:`Checkpoint` already encoded as stored (its JSON). The engine encodes each
    symbol's checkpoint as it takes it: 2,000 symbols' detector states waiting for the
    writer as Python objects held about 20 MB every round, as JSON about 6 MB."""

    exchange: str
    symbol: str
    payload: bytes


_encode_checkpoint = msgspec.json.Encoder().encode


def encode_checkpoint(checkpoint: Checkpoint) -> EncodedCheckpoint:
    """``checkpoint`` as a store keeps it."""
    return EncodedCheckpoint(checkpoint.exchange, checkpoint.symbol, _encode_checkpoint(checkpoint))


def checkpoint_rows(
    checkpoints: Sequence[Checkpoint | EncodedCheckpoint],
) -> list[EncodedCheckpoint]:
    """``(exchange, symbol, JSON)`` of each checkpoint, encoded or not yet."""
    return [c if isinstance(c, EncodedCheckpoint) else encode_checkpoint(c) for c in checkpoints]


class SignalPage(msgspec.Struct, frozen=True):
    """One page of signals, newest first, and where the next page starts."""

    signals: list[Signal]
    next_cursor: Cursor | None


class SignalStore(Protocol):
    """Keeps every signal; adding the same signal id twice keeps one."""

    def add(self, signals: Sequence[Signal], seqs: Sequence[int] | None = None) -> int:
        """Store ``signals`` durably with their delivery numbers; returns how many were new."""
        ...

    def last_trade_ids(self, exchange: str) -> dict[tuple[str, str], int]:
        """The highest trade id with a stored signal, by (symbol, detector)."""
        ...

    def max_seq(self) -> int:
        """The highest delivery sequence number stored (0 when empty)."""
        ...

    def after_seq(
        self,
        seq: int,
        limit: int = 1000,
        symbol: str | None = None,
        exchange: str | None = None,
    ) -> list[tuple[int, Signal]]:
        """Signals delivered after ``seq``, in delivery order, with their numbers."""
        ...

    def latest(self, symbol: str | None = None, exchange: str | None = None) -> Signal | None:
        """The signal with the latest trade time (of ``symbol`` and ``exchange``, where
        given: BTCUSDT spot and BTCUSDT futures are two different series)."""
        ...

    def page(
        self,
        *,
        exchange: str | None = None,
        symbol: str | None = None,
        since_us: int | None = None,
        until_us: int | None = None,
        limit: int = 100,
        after: Cursor | None = None,
    ) -> SignalPage:
        """Signals newest first, ``since_us <= time < until_us``, after ``after``."""
        ...

    def page_json(
        self,
        *,
        exchange: str | None = None,
        symbol: str | None = None,
        since_us: int | None = None,
        until_us: int | None = None,
        limit: int = 100,
        after: Cursor | None = None,
    ) -> tuple[list[bytes], Cursor | None]:
        """:meth:`page` with each signal as its JSON encoding."""
        ...

    def count(self, symbol: str | None = None, exchange: str | None = None) -> int:
        """How many signals are stored (of ``symbol`` and ``exchange``, where given)."""
        ...

    def add_gap(self, gap: GapRecord) -> None:
        """Record a hole in the trade record."""
        ...

    def gaps(
        self,
        *,
        exchange: str | None = None,
        symbol: str | None = None,
        since_us: int | None = None,
        until_us: int | None = None,
        limit: int = 100,
    ) -> list[GapRecord]:
        """Recorded gaps, newest first."""
        ...

    def save_checkpoints(self, checkpoints: Sequence[Checkpoint | EncodedCheckpoint]) -> None:
        """Replace the stored checkpoints of these symbols (encoded ones as they are)."""
        ...

    def checkpoints(self, exchange: str) -> dict[str, Checkpoint]:
        """The stored checkpoints of ``exchange``, by symbol."""
        ...

    def prune(self, keep_s: float, now: float | None = None, limit: int = 10_000) -> int:
        """Forget up to ``limit`` of the signals stored more than ``keep_s`` seconds before
        ``now`` (wall clock), the newest one excepted; returns how many (``limit``: call
        again for more). Idempotent and cheap (by delivery number)."""
        ...

    def close(self) -> None:
        """Release the store's connections."""
        ...
