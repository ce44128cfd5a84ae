"""The shape every exchange adapter has."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol

from spikewatch.core.model import Trade


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


class Exchange(Protocol):
    """What the ingest client and the replay readers need of an exchange."""

    name: str

    def stream_url(self, base_url: str, symbols: Sequence[str]) -> str:
        """The WebSocket URL that streams the trades of ``symbols`` (upper-case)."""
        ...

    def parse(self, frame: bytes | str) -> Trade | Control:
        """Decode one frame; raise :class:`MalformedFrame` for anything unusable."""
        ...
