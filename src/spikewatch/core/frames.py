"""What a venue's parser hands the kernel: trades as column batches (or single trades
where a run is short), controls, and the frames it could not use; and what the venue
guarantees (:class:`Capabilities`).

Defined in the core because the kernel consumes them; every exchange adapter
(``spikewatch.exchanges``) produces them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgspec

from spikewatch.core.model import Trade, TradeBatch

#: Runs of fewer trades are cheaper as single :class:`Trade` s than as a column batch:
#: the batch paths' fixed costs are higher than their gains on a handful (a quiet
#: market's read holds one frame). Parsers and the kernel both go by it.
SMALL_RUN = 8


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


class ParsedFrames(msgspec.Struct, frozen=True):
    """What a batch parser made of many frames; every frame is in exactly one list.
    (A struct, not a dataclass: one is made per network read, and a frozen dataclass
    costs several times more to make.)"""

    #: the trades, in frame order: runs of consecutive trades of one symbol as column
    #: batches, and short runs (under :data:`SMALL_RUN`) as single trades
    batches: Sequence[TradeBatch | Trade]
    #: (position in the frames given, why) of each frame that cannot be used
    errors: list[tuple[int, MalformedFrame]]
    #: (position, control) of each frame that carries no trade
    controls: list[tuple[int, Control]]

    @property
    def trades(self) -> int:
        """How many trades the batches hold."""
        return sum(len(b) if type(b) is TradeBatch else 1 for b in self.batches)

    def trade_list(self) -> list[Trade]:
        """Every trade, in frame order, one object each."""
        out: list[Trade] = []
        for item in self.batches:
            if isinstance(item, TradeBatch):
                out.extend(item.trades())
            else:
                out.append(item)
        return out

    @classmethod
    def collect(cls, results: Iterable[Trade | Control | MalformedFrame]) -> ParsedFrames:
        """Sort the results of parsing frames one at a time (the ``i``-th result is of the
        ``i``-th frame) into runs of one symbol's trades, errors and controls: the batch
        entry point of an adapter that parses frame by frame."""
        batches: list[TradeBatch | Trade] = []
        errors: list[tuple[int, MalformedFrame]] = []
        controls: list[tuple[int, Control]] = []
        run: list[Trade] = []
        for i, item in enumerate(results):
            if isinstance(item, Trade):
                if run and (item.symbol != run[0].symbol or item.exchange != run[0].exchange):
                    _close_run(run, batches)
                    run = []
                run.append(item)
            elif isinstance(item, MalformedFrame):
                errors.append((i, item))
            else:
                controls.append((i, item))
        if run:
            _close_run(run, batches)
        return cls(batches, errors, controls)


def _close_run(run: list[Trade], into: list[TradeBatch | Trade]) -> None:
    """A run of one symbol's trades: a column batch, or single trades if it is short."""
    if len(run) < SMALL_RUN:
        into.extend(run)
    else:
        into.append(TradeBatch.from_trades(run))


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a venue guarantees and allows; the kernel and the runtime act on these."""

    #: trade ids step by exactly one per symbol, so a jump in ids is a gap (Binance: yes;
    #: a venue without such ids only has repeats dropped, never gaps detected)
    consecutive_ids: bool = True
    #: ids a venue may use for fills its trade stream and REST do not carry as market
    #: trades (USD-M: insurance-fund and ADL fills), at most this many in a row: such a
    #: hole that REST cannot fill is skipped (counted), not recorded as lost trades
    id_holes: int = 0
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
