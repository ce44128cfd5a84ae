"""What a venue's parser hands the kernel: trades as column batches, controls, and the
frames it could not use; and what the venue guarantees (:class:`Capabilities`).

Defined in the core because the kernel consumes them; every exchange adapter
(``spikewatch.exchanges``) produces them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from spikewatch.core.model import TradeBatch


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


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a venue guarantees and allows; the kernel and the runtime act on these."""

    #: trade ids step by exactly one per symbol, so a jump in ids is a gap (Binance: yes;
    #: a venue without such ids only has repeats dropped, never gaps detected)
    consecutive_ids: bool = True
    #: a gap can be fetched over REST by trade id (else a gap is recorded at once)
    fetch_by_id: bool = True
    #: the latest trades can be fetched over REST (warm start of the windows)
    recent_trades: bool = True
    #: streams one connection may carry
    max_streams_per_connection: int = 1024
    #: messages a client may send per second (subscribe, pong...) before being cut off
    max_messages_per_second: int = 5
    #: seconds after which the server cuts a connection (it is rotated a little before)
    max_connection_age_s: float = 24 * 3600
    #: trades one REST trade look-up returns at most
    rest_page: int = 1000
    #: request weight allowed per minute and IP
    rest_weight_limit: int = 6000
    #: seconds between application-level heartbeats (``Exchange.heartbeat()``); 0: none
    heartbeat_interval_s: float = 0.0


@dataclass(frozen=True, slots=True)
class FrameMarks:
    """Byte strings that tell a venue's trade frames from its other frames unparsed (a
    recording mixes trades with depth and ticker frames; most need no parsing at all)."""

    #: in every line that holds a trade frame, however recorded (escaped in a recorder's
    #: JSON string, re-spaced): a line without it is skipped unparsed
    line: bytes
    #: in each trade frame exactly once, as the venue sends it: a block with as many of
    #: these as lines holds nothing else, and is parsed without looking line by line
    event: bytes
