"""The shape every exchange adapter has."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from spikewatch.core.model import Trade, TradeBatch


class Control(enum.Enum):
    """A frame that carries no trade but means something to the client."""

    ACK = "ack"  # a reply to a control request (subscribe, ...)
    SHUTDOWN = "shutdown"  # the server is about to close this connection: rotate now
    IGNORED = "ignored"  # a well-formed event of a kind this detector does not use


class MalformedFrame(ValueError):
    """A frame that cannot be used. ``kind`` is a short, stable label for counting."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ParsedFrames:
    """What a batch parser made of many frames; every frame is in exactly one list."""

    #: the trades, in frame order, as runs of consecutive trades of one symbol
    batches: list[TradeBatch]
    #: (position in the frames given, why) of each frame that cannot be used
    errors: list[tuple[int, MalformedFrame]]
    #: (position, control) of each frame that carries no trade
    controls: list[tuple[int, Control]]

    @property
    def trades(self) -> int:
        """How many trades the batches hold."""
        return sum(len(b) for b in self.batches)


class Exchange(Protocol):
    """What the ingest client and the replay readers need of an exchange."""

    name: str

    def stream_url(self, base_url: str, symbols: Sequence[str]) -> str:
        """The WebSocket URL that streams the trades of ``symbols`` (upper-case)."""
        ...

    def parse(self, frame: bytes | str) -> Trade | Control:
        """Decode one frame; raise :class:`MalformedFrame` for anything unusable."""
        ...

    def parse_batch(self, frames: Sequence[bytes]) -> ParsedFrames:
        """What :meth:`parse` makes of each of ``frames``, with trades as column batches
        (the live engine hands over each network read, replay whole files)."""
        ...

    def recent_trades_path(self, symbol: str, limit: int) -> str:
        """REST path (after the base URL) of the latest ``limit`` trades."""
        ...

    def historical_trades_path(self, symbol: str, from_id: int, limit: int) -> str:
        """REST path of up to ``limit`` trades from id ``from_id`` on."""
        ...

    def parse_rest_trades(self, body: bytes, symbol: str) -> list[Trade]:
        """Trades of a REST reply, oldest first; raises :class:`MalformedFrame`."""
        ...
